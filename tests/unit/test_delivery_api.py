"""The delivery routes of the API function, in-process: API Gateway events in, status codes and JSON out, against
moto (SageMaker endpoints for the policy check, DynamoDB, Step Functions without execution)."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import boto3
import pytest
from api_kit import NO_STATE_MACHINE, api_request, create_endpoint

from inferops import deliveries, delivery
from inferops.delivery_policy import DeliveryPolicy
from inferops.storage import OperationStatus, Repository
from twin.lambdas import load_function

pytestmark = pytest.mark.usefixtures("keep_boto3_session")
GROUP = "fraud-scorer"


class Api:
    def __init__(self, module: ModuleType, repo: Repository) -> None:
        self.module, self.repo = module, repo

    def call(self, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None) -> tuple[int, Any]:
        status, reply, _ = api_request(self.module, method, path, body=body, query=query)
        return status, reply


@pytest.fixture
def api(ddb_table: Repository, monkeypatch: pytest.MonkeyPatch) -> Api:
    sm = boto3.client("sagemaker", region_name="us-east-1")
    for name in ("fraud-staging", "fraud-prod"):
        create_endpoint(sm, name, models=(f"{name}-v1",), instance_type="ml.c5.large")
    monkeypatch.setenv("TABLE_NAME", ddb_table.table_name)
    monkeypatch.setenv("DEPLOYMENT_STATE_MACHINE_ARN", NO_STATE_MACHINE)
    monkeypatch.setenv("SHADOW_TEST_STATE_MACHINE_ARN", NO_STATE_MACHINE)
    module = load_function("api")
    module.include_routes()
    monkeypatch.setattr(module.delivery_routes, "_services", delivery.services_from_environment)
    return Api(module, ddb_table)


def policy(**extra: Any) -> dict[str, Any]:
    deployment = {"strategy": {"type": "canary", "size": {"value": 50}}, "create_recommended_alarms": True}
    return {
        "stages": [
            {"name": "staging", "endpoint_name": "fraud-staging", "deployment": deployment},
            {"name": "production", "endpoint_name": "fraud-prod", "deployment": deployment, "approval": True},
        ],
        **extra,
    }


def test_a_policy_is_stored_read_and_deleted(api: Api) -> None:
    status, stored = api.call("PUT", f"/delivery-policies/{GROUP}", body=policy())
    assert status == 200, stored
    assert stored["group"] == GROUP and stored["policy"]["stages"][1]["approval"] is True
    status, read = api.call("GET", f"/delivery-policies/{GROUP}")
    assert (status, read["policy"]) == (200, stored["policy"])
    assert api.call("DELETE", f"/delivery-policies/{GROUP}")[0] == 204
    status, gone = api.call("GET", f"/delivery-policies/{GROUP}")
    assert status == 404 and gone["field"] == "group"
    assert api.call("DELETE", f"/delivery-policies/{GROUP}")[0] == 404


def test_a_policy_its_endpoint_would_refuse_is_422_naming_the_endpoint_and_the_rule(api: Api) -> None:
    bad = policy()
    bad["stages"][1]["deployment"] = {"strategy": {"type": "canary", "size": {"value": 80}}, "alarms": ["a"]}
    bad["stages"].append({"name": "dr", "endpoint_name": "fraud-dr"})
    status, reply = api.call("PUT", f"/delivery-policies/{GROUP}", body=bad)
    assert status == 422, reply
    fields = [v["field"] for v in reply["violations"]]
    assert reply["field"] == fields[0] and fields[0].startswith("stages[1].deployment.strategy")
    assert "endpoint fraud-prod" in reply["message"]
    assert reply["violations"][-1]["rule"] == "endpoint-exists" and "fraud-dr" in reply["violations"][-1]["message"]
    assert api.call("GET", f"/delivery-policies/{GROUP}")[0] == 404  # nothing stored


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stages": []}, "stages"),
        ({"stages": [{"name": "staging"}]}, "endpoint_name"),
        ({"stages": [{"name": "s", "endpoint_name": "e", "deployment": {"model": {}}}]}, "deployment"),
        ({**policy(), "freeze_windows": [{"kind": "weekly", "days": ["XYZ"], "start": "1", "end": "2"}]}, "days"),
    ],
)
def test_malformed_policies_name_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    status, reply = api.call("PUT", f"/delivery-policies/{GROUP}", body=body)
    assert status == 422, reply
    assert field in json.dumps(reply)


def test_deliveries_are_listed_read_and_cancelled(api: Api) -> None:
    the_policy = DeliveryPolicy.model_validate(policy())
    request = {"group": GROUP, "version": 3, "model_package_arn": "arn:x", "policy": the_policy.model_dump(mode="json")}
    the_id = deliveries.delivery_id(GROUP, 3)
    api.repo.create_operation(delivery.KIND, GROUP, request, the_id)

    assert api.call("GET", "/deliveries")[0] == 422  # the group is required
    status, page = api.call("GET", "/deliveries", query={"group": GROUP, "status": "PENDING"})
    assert status == 200 and [d["id"] for d in page["deliveries"]] == [the_id] and page["next_token"] is None
    status, view = api.call("GET", f"/deliveries/{the_id}")
    assert status == 200 and [s["status"] for s in view["stages"]] == ["PENDING", "PENDING"]
    assert view["stages"][1]["approval"] is True and view["version"] == 3
    status, refused = api.call("POST", f"/deliveries/{the_id}/approve")
    assert status == 409 and refused["field"] == "status"
    status, cancelled = api.call("POST", f"/deliveries/{the_id}/cancel", body={"reason": "bad data"})
    assert status == 202 and cancelled["status"] == OperationStatus.ABORTED and cancelled["reason"] == "bad data"
    assert api.call("POST", f"/deliveries/{the_id}/cancel")[0] == 409
    assert api.call("GET", "/deliveries/dlv-nope-1")[0] == 404
