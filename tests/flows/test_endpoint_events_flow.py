"""On the twin, with the real template: SageMaker's own events reach EndpointEventsFunction through the
EventBridge rule and resume an execution waiting for the endpoint, once, even with repeated events."""

from __future__ import annotations

import json
from typing import Any

from inferops.endpoint_events import WAIT_PURPOSE
from inferops.storage import Repository
from twin.runtime import Twin

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
# How a flow waits for an endpoint: store its task token where the events handler looks, then wait.
WAIT_FOR_ENDPOINT = {
    "StartAt": "WaitForEndpoint",
    "States": {
        "WaitForEndpoint": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:dynamodb:putItem.waitForTaskToken",
            "Parameters": {
                "TableName.$": "$.table",
                "Item": {
                    "pk": {"S.$": "States.Format('TOKEN#{}', $.endpoint)"},
                    "sk": {"S": WAIT_PURPOSE},
                    "endpoint": {"S.$": "$.endpoint"},
                    "purpose": {"S": WAIT_PURPOSE},
                    "token": {"S.$": "$$.Task.Token"},
                    "operation_id": {"S.$": "$.operation"},
                    "created_at": {"S.$": "$$.State.EnteredTime"},
                    "expires_at": {"N": "4102444800"},
                },
            },
            "HeartbeatSeconds": 3600,
            "End": True,
        }
    },
}


def _endpoint(twin: Twin, name: str, config: str, model: str) -> None:
    sagemaker = twin.client("sagemaker")
    sagemaker.create_model(
        ModelName=model,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/m:{model}",
            "ModelDataUrl": "s3://m/x",
        },
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 2, "InstanceType": "ml.c7g.large"}
        ],
    )
    if name not in {e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]}:
        sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config)


def _settle(twin: Twin, name: str) -> None:
    sagemaker = twin.client("sagemaker")
    while sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] != "InService":
        twin.clock.sleep(30)


def test_an_update_resumes_the_waiting_execution_once() -> None:
    with Twin() as twin:
        table = twin.template.physical("OperationsTable").ref
        _endpoint(twin, "scorer", "scorer-v1", "m1")
        _settle(twin, "scorer")
        twin.faults.events.duplicate = 1.0  # every event delivered twice: SageMaker may repeat them
        stepfunctions = twin.client("stepfunctions")
        machine = stepfunctions.create_state_machine(
            name="wait-for-endpoint", definition=json.dumps(WAIT_FOR_ENDPOINT), roleArn=ROLE
        )["stateMachineArn"]
        Repository(table).acquire_lock("scorer", "op-42", 3600)
        Repository(table).create_operation("deployment", "scorer", {}, operation_id="op-42")

        execution = stepfunctions.start_execution(
            stateMachineArn=machine, input=json.dumps({"table": table, "endpoint": "scorer", "operation": "op-42"})
        )["executionArn"]
        twin.clock.sleep(5)  # the token is stored before the update starts, as in the deployment flow
        with twin.busy():  # the operator's calls take no virtual time: the heartbeat must not fire meanwhile
            _endpoint(twin, "scorer", "scorer-v2", "m2")
            twin.client("sagemaker").update_endpoint(EndpointName="scorer", EndpointConfigName="scorer-v2")
        done = twin.wait_execution(execution, timeout_real=10)
        _settle(twin, "scorer")
        twin.clock.sleep(60)  # let the repeated events arrive too
        handled = twin.lambdas.of("EndpointEventsFunction")
        timeline = Repository(table).timeline("op-42")

    assert done["status"] == "SUCCEEDED", done
    resumed: dict[str, Any] = json.loads(done["output"])
    assert (resumed["status"], resumed["config_name"]) == ("InService", "scorer-v2")
    assert done["virtual_duration"] < 3600  # by the event, not the heartbeat fallback
    results = [i.payload for i in handled if isinstance(i.payload, dict)]
    assert sum(1 for r in results if r.get("action") == "resumed") == 1
    assert any(r.get("action") == "ignored" for r in results)  # the repeats changed nothing
    assert [e.message for e in timeline][-1] == "endpoint InService on scorer-v2"
    assert any("Updating" in e.message for e in timeline)
