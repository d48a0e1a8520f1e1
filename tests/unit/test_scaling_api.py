"""The scale-to-zero routes of the API function, in-process against moto: bad input is a 4xx naming the field,
a started operation holds the endpoint's lock, and the reads answer for endpoints under scale-to-zero or not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_kit import ENDPOINT, api_request, create_endpoint, create_state_machine
from api_kit import client as _client

from inferops.scaling import ScaleToZeroRequest, Settings
from inferops.storage import Repository
from twin.lambdas import load_function

pytestmark = pytest.mark.usefixtures("keep_boto3_session")


Call = Any


@pytest.fixture
def call(ddb_table: Repository, monkeypatch: pytest.MonkeyPatch) -> Iterator[Call]:
    create_endpoint(_client("sagemaker"), models=("fraud-v1",), instance_type="ml.c5.large")
    arn = create_state_machine("scaling")
    monkeypatch.setenv("TABLE_NAME", ddb_table.table_name)
    for name in ("DEPLOYMENT", "SHADOW_TEST", "SCALING"):
        monkeypatch.setenv(f"{name}_STATE_MACHINE_ARN", arn)
    api = load_function("api")
    api.include_routes()
    api.scaling_routes._clients.cache_clear()

    def send(method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> tuple[int, Any]:
        status, reply, _ = api_request(api, method, path, body=body, query=query)
        return status, reply

    yield send
    api.scaling_routes._clients.cache_clear()


@pytest.mark.parametrize(
    ("body", "field"),
    [({"idle_minutes": 5}, "idle_minutes"), ({"schedule": {"end": "8pm"}}, "schedule.end"), ({"x": 1}, "x")],
)
def test_a_bad_body_is_422_naming_the_field(call: Call, body: dict[str, Any], field: str) -> None:
    status, reply = call("PUT", f"/endpoints/{ENDPOINT}/scale-to-zero", body)
    assert status == 422, reply
    assert field in json.dumps(reply)


def test_unknown_endpoints_and_endpoints_not_under_scale_to_zero_are_404(call: Call) -> None:
    assert call("PUT", "/endpoints/nope/scale-to-zero", {})[0] == 404
    assert call("GET", "/endpoints/nope")[0] == 404
    for method, path in (("DELETE", f"/endpoints/{ENDPOINT}/scale-to-zero"), ("POST", f"/endpoints/{ENDPOINT}/wake")):
        status, reply = call(method, path)
        assert (status, reply["field"]) == (404, "name"), reply
        assert "not under scale-to-zero" in reply["message"]


def test_parameters_that_do_not_fit_the_kind_are_400(call: Call) -> None:
    status, reply = call("PUT", f"/endpoints/{ENDPOINT}/scale-to-zero", {"max_copies": 2})
    assert (status, reply["field"]) == (400, "max_copies"), reply


def test_enabling_starts_the_flow_under_the_endpoints_lock(call: Call, ddb_table: Repository) -> None:
    status, started = call("PUT", f"/endpoints/{ENDPOINT}/scale-to-zero", {"idle_minutes": 30})
    assert status == 202, started
    assert (started["action"], started["status"], started["trigger"]) == ("enable", "PENDING", "request")
    lock = ddb_table.get_lock(ENDPOINT)
    assert lock is not None and lock.owner == started["id"]
    status, busy = call("PUT", f"/endpoints/{ENDPOINT}/scale-to-zero", {"idle_minutes": 30})
    assert (status, busy["field"]) == (409, "name"), busy
    status, view = call("GET", f"/endpoints/{ENDPOINT}")
    assert status == 200, view
    assert (view["kind"], view["status"], view["scale_to_zero"]) == ("classic", "InService", None)
    assert view["operation"]["id"] == started["id"]


def test_cost_report_days_are_checked(call: Call) -> None:
    assert call("GET", "/reports/cost", query={"days": "0"})[0] == 422
    status, report = call("GET", "/reports/cost", query={"days": "7"})
    assert status == 200, report
    assert (report["days"], report["endpoints"], report["saved_usd"]) == (7, [], 0.0)


def test_park_on_request_is_for_classic_endpoints_under_scale_to_zero(call: Call, ddb_table: Repository) -> None:
    assert call("POST", f"/endpoints/{ENDPOINT}/park")[0] == 404
    settings = Settings(endpoint=ENDPOINT, kind="inference-component", request=ScaleToZeroRequest(), enabled_at=0.0)
    ddb_table.put_scaling_settings(ENDPOINT, settings.model_dump(mode="json"))
    status, reply = call("POST", f"/endpoints/{ENDPOINT}/park")
    assert (status, reply["field"]) == (400, "name"), reply
    classic = settings.model_copy(update={"kind": "classic"})
    ddb_table.put_scaling_settings(ENDPOINT, classic.model_dump(mode="json"))
    status, started = call("POST", f"/endpoints/{ENDPOINT}/park")
    assert status == 202, started
    assert (started["action"], started["trigger"]) == ("park", "request")
