"""`make up`: the real API handler on 127.0.0.1, API Gateway in front of it, the twin behind it.

    python -m twin.server [--port 0|N] [--speed S] [--template PATH] [--root DIR]

Each HTTP request becomes the API Gateway REST proxy event the function receives in AWS (resource,
path, query, headers, body, requestContext with the caller's identity) for the route template.yaml gives
it; the function's reply becomes the HTTP response. Paths are accepted with or without the stage
(`/v1/plans` or `/plans`), as the CLI uses the API's URL `http://127.0.0.1:<port>/<stage>`.

Authentication, as API Gateway's AWS_IAM authorizer answers before the function runs: no `Authorization`
header -> 403 MissingAuthenticationTokenException; a header that is not a complete `AWS4-HMAC-SHA256
Credential=.../SignedHeaders=.../Signature=...` -> 403 IncompleteSignatureException. The signature itself
is not verified (the twin has no secret keys to check it against); the access key in `Credential` becomes
`requestContext.identity.accessKey`. Unknown routes answer 403 "Missing Authentication Token", as API
Gateway does. The server binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twin.runtime import Twin

HOST = "127.0.0.1"
_SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[A-Za-z0-9]+)/\d{8}/[a-z0-9-]+/[a-z0-9-]+/aws4_request,\s*"
    r"SignedHeaders=[a-z0-9;-]+,\s*Signature=[0-9a-f]{64}$"
)


def check_authorization(header: str | None) -> tuple[int, dict[str, str], str] | str:
    """The access key of a well-formed SigV4 header, or API Gateway's 403 (status, headers, message)."""
    if not header:
        return 403, {"x-amzn-ErrorType": "MissingAuthenticationTokenException"}, "Missing Authentication Token"
    matched = _SIGV4.match(header.strip())
    if matched is None:
        return (
            403,
            {"x-amzn-ErrorType": "IncompleteSignatureException"},
            f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters "
            f"of an AWS4-HMAC-SHA256 signature. Authorization={header}",
        )
    return matched.group("key")


class TwinServer:
    """A ThreadingHTTPServer on 127.0.0.1 that turns requests into API Gateway proxy events for the twin."""

    def __init__(self, twin: Twin, port: int = 0) -> None:
        self.twin = twin
        handler = type("Handler", (_Handler,), {"twin": twin})
        self.httpd = ThreadingHTTPServer((HOST, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        """The API's base URL, stage included, as the stack's ApiUrl output would give it."""
        stages = {api.stage for api in self.twin.template.apis.values()}
        stage = sorted(stages)[0] if stages else "Prod"
        return f"http://{HOST}:{self.port}/{stage}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="twin-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TwinServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    twin: Twin
    protocol_version = "HTTP/1.1"
    server_version = "inferops-twin"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"twin-api {self.address_string()} {format % args}\n")

    def _handle(self) -> None:
        """API Gateway answers 502 when the integration fails; it never drops the connection."""
        try:
            self._serve()
        except Exception as error:  # a bug in the twin or the function's reply: say so, as API Gateway would
            sys.stderr.write(f"twin-api: {type(error).__name__}: {error}\n")
            self._reply(502, {"x-amzn-ErrorType": "InternalServerErrorException"}, "Internal server error")

    def _serve(self) -> None:
        method = self.command
        parts = urlsplit(self.path)
        path = self._strip_stage(parts.path)
        length = int(self.headers.get("Content-Length") or 0)
        # without binary media types API Gateway hands a REST proxy integration the body as text
        body = self.rfile.read(length).decode(errors="replace") if length else None
        found = self.twin.match_route(method, path)
        if found is None:
            self._reply(
                403, {"x-amzn-ErrorType": "MissingAuthenticationTokenException"}, "Missing Authentication Token"
            )
            return
        route, _ = found
        access_key = "ASIAEXAMPLEKEY"
        if route.auth == "AWS_IAM":
            checked = check_authorization(self.headers.get("Authorization"))
            if isinstance(checked, tuple):
                self._reply(*checked)
                return
            access_key = checked
        query = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        response = self.twin.api_call(
            method,
            path,
            body,
            query or None,
            dict(self.headers.items()),
            source_ip=self.client_address[0],
            access_key=access_key,
        )
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else str(payload).encode()
        self.send_response(int(response.get("statusCode", 502)))
        headers = dict(response.get("headers") or {})
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers.pop(name, None)
            for value in values:
                self.send_header(name, str(value))
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _strip_stage(self, path: str) -> str:
        for api in self.twin.template.apis.values():
            prefix = f"/{api.stage}"
            if path == prefix or path.startswith(prefix + "/"):
                return path[len(prefix) :] or "/"
        return path

    def _reply(self, status: int, headers: dict[str, str], message: str) -> None:
        data = json.dumps({"message": message}).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twin.server", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--speed", type=float, default=1.0, help="virtual seconds per wall second while busy")
    parser.add_argument("--template", type=Path, default=None)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    with Twin(args.template, args.root, speed=args.speed) as twin, TwinServer(twin, args.port) as server:
        print(f"InferOps API (local twin): {server.url}", flush=True)
        print("requests must carry a SigV4 Authorization header (any key; not verified). Ctrl-C stops.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
