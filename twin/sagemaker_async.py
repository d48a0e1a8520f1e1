"""Asynchronous inference: InvokeEndpointAsync queues a request; instances work the queue; results land in S3
and SageMaker's notification JSON goes to the SNS success/error topics (an unhealthy model fails requests).

Notification shapes:
- TestNotification and the success body: the SageMaker Developer Guide, "Check prediction results"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html).
- Error body: AWS publishes no sample. Same envelope with `invocationStatus` "Failed", `failureReason`, and
  `responseParameters.failureLocation` when S3FailurePath is set, as public consumers parse it
  (awslabs/osml-model-runner, src/aws/osml/model_runner/database/tile_request_table.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from moto.sagemaker.models import SageMakerModelBackend

from twin.sagemaker_base import (
    ASYNC_DEFAULT_CONCURRENCY,
    ASYNC_MODEL_ERROR,
    ASYNC_PROCESSING_SECONDS,
    AsyncRequest,
    EndpointState,
    RuntimeValidationError,
    iso_ms,
)
from twin.sagemaker_deploy import DeploymentMixin

TEST_NOTIFICATION = {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"}
SERVING = ("InService", "Updating", "UpdateRollbackFailed")


@dataclass(frozen=True)
class AsyncBacklog:
    """For the load model's async metrics (ApproximateBacklogSize, HasBacklogWithoutCapacity...)."""

    queued: int
    in_flight: int
    oldest_age_seconds: float | None
    instances: int

    @property
    def size(self) -> int:
        return self.queued + self.in_flight


class AsyncMixin(DeploymentMixin):
    """InvokeEndpointAsync, its queue and its notifications."""

    def async_test_notification(self, ep: EndpointState, async_config: dict[str, Any] | None) -> None:
        topics = self._topics(async_config)
        for topic in dict.fromkeys(t for t in topics.values() if t):
            self.publish(ep.account, ep.region, topic, TEST_NOTIFICATION)

    @staticmethod
    def _topics(async_config: dict[str, Any] | None) -> dict[str, str | None]:
        notification = ((async_config or {}).get("OutputConfig") or {}).get("NotificationConfig") or {}
        return {"success": notification.get("SuccessTopic"), "error": notification.get("ErrorTopic")}

    def capacity_changed(self, ep: EndpointState, when: float) -> None:
        super().capacity_changed(ep, when)
        self.pump(ep, when)

    # ------------------------------------------------------------------ the operation
    def op_invoke_endpoint_async(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        name = params["EndpointName"]
        fake = backend.endpoints.get(name)
        ep = getattr(fake, "twin", None)
        if not isinstance(ep, EndpointState) or ep.status == "Deleting":
            raise RuntimeValidationError(f"Endpoint {name} of account {backend.account_id} not found.")
        if not ep.async_config:
            raise RuntimeValidationError(
                f"Endpoint {name} of account {backend.account_id} is not configured for asynchronous inference."
            )
        if ep.status not in SERVING:
            raise RuntimeValidationError(f"Endpoint {name} is not in service (status {ep.status}).")
        output = ep.async_config["OutputConfig"]
        inference_id = params.get("InferenceId") or self.new_id()
        key = self.new_id()
        output_path = str(output.get("S3OutputPath", "")).rstrip("/")
        failure_path = output.get("S3FailurePath")
        request = AsyncRequest(
            inference_id=inference_id,
            input_location=params["InputLocation"],
            content_type=params.get("ContentType"),
            accept=params.get("Accept"),
            received=now,
            output_location=f"{output_path}/{key}.out",
            failure_location=f"{str(failure_path).rstrip('/')}/{key}-error.out" if failure_path else None,
        )
        ep.queue.append(request)
        self.pump(ep, now)
        result = {"InferenceId": inference_id, "OutputLocation": request.output_location}
        if request.failure_location:
            result["FailureLocation"] = request.failure_location
        return result

    # ------------------------------------------------------------------ the queue
    def _slots(self, ep: EndpointState) -> int:
        client = (ep.async_config or {}).get("ClientConfig") or {}
        per_instance = int(client.get("MaxConcurrentInvocationsPerInstance") or ASYNC_DEFAULT_CONCURRENCY)
        return sum(f.active for f in ep.fleets) * per_instance

    def pump(self, ep: EndpointState, when: float) -> None:
        """Start queued requests while capacity allows: with 0 instances they wait for a scale-out."""
        if not ep.async_config or ep.status not in SERVING or not self.alive(ep):
            return
        while ep.queue and ep.in_flight < self._slots(ep):
            request = ep.queue.popleft()
            ep.in_flight += 1
            self._process_later(ep, request, when + ASYNC_PROCESSING_SECONDS)

    def _process_later(self, ep: EndpointState, request: AsyncRequest, when: float) -> None:
        self.at(when, lambda t: self._processed(ep, request, t), f"async {ep.name}")

    def _serving_model(self, ep: EndpointState) -> str | None:
        """The model of the fleet that took the request, drawn by traffic share (seeded: deterministic)."""
        fleets = [f for f in ep.fleets if f.active > 0]
        if not fleets:
            return None
        pick = self._rng.random() * sum(f.traffic or 1.0 for f in fleets)
        for fleet in fleets:
            pick -= fleet.traffic or 1.0
            if pick <= 0:
                return fleet.model_name
        return fleets[-1].model_name

    def _processed(self, ep: EndpointState, request: AsyncRequest, when: float) -> None:
        if not self.alive(ep):
            return
        ep.in_flight = max(0, ep.in_flight - 1)
        topics = self._topics(ep.async_config)
        base = {
            "awsRegion": ep.region,
            "eventTime": iso_ms(when),
            "receivedTime": iso_ms(request.received),
            "requestParameters": {
                "contentType": request.content_type or "application/octet-stream",
                "endpointName": ep.name,
                "inputLocation": request.input_location,
            },
            "inferenceId": request.inference_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
        payload = self.s3_read(ep.account, ep.region, request.input_location)
        healthy = self.healthy(self._serving_model(ep))
        output_bucket = self.s3_split(request.output_location)[0]
        if payload is not None and healthy and self.s3_bucket_exists(ep.account, ep.region, output_bucket):
            content_type = request.accept or request.content_type or "application/json"
            self._write_later(ep, request.output_location, payload)
            if topics["success"]:
                message = {
                    **base,
                    "invocationStatus": "Completed",
                    "responseParameters": {"contentType": content_type, "outputLocation": request.output_location},
                }
                self.publish(ep.account, ep.region, topics["success"], _ordered(message))
        else:
            reason = (
                ASYNC_MODEL_ERROR
                if payload is not None
                else (f"ClientError: Failed to download data from the input location {request.input_location}.")
            )
            response: dict[str, Any] = {}
            if request.failure_location:
                location = request.failure_location
                body = json.dumps({"message": reason}).encode()
                self._write_later(ep, location, body)
                response = {"contentType": "application/json", "failureLocation": location}
            if topics["error"]:
                message = {**base, "invocationStatus": "Failed", "failureReason": reason}
                if response:
                    message["responseParameters"] = response
                self.publish(ep.account, ep.region, topics["error"], _ordered(message))
        self.pump(ep, when)

    def _write_later(self, ep: EndpointState, uri: str, body: bytes) -> None:
        def write() -> None:
            self.s3_write(ep.account, ep.region, uri, body)

        self.later(write)

    def async_backlog(
        self, endpoint_name: str, *, account: str | None = None, region: str | None = None
    ) -> AsyncBacklog:
        """Queue depth and age for an async endpoint (zeros for any other endpoint)."""
        with self.guard():
            backend = self.backend(account or self.account, region or self.region)
            ep = getattr(backend.endpoints.get(endpoint_name), "twin", None)
            if not isinstance(ep, EndpointState):
                return AsyncBacklog(0, 0, None, 0)
            oldest = ep.queue[0].received if ep.queue else None
            now = self.clock.now()
            return AsyncBacklog(
                queued=len(ep.queue),
                in_flight=ep.in_flight,
                oldest_age_seconds=None if oldest is None else max(0.0, now - oldest),
                instances=sum(f.active for f in ep.fleets),
            )


def _ordered(message: dict[str, Any]) -> dict[str, Any]:
    """Key order of the published sample (cosmetic: JSON consumers don't care, humans reading logs do)."""
    order = [
        "awsRegion",
        "eventTime",
        "receivedTime",
        "invocationStatus",
        "failureReason",
        "requestParameters",
        "responseParameters",
        "inferenceId",
        "eventVersion",
        "eventSource",
        "eventName",
    ]
    return {k: message[k] for k in order if k in message}
