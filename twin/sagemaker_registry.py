"""The Model Registry's events: moto keeps model package groups and packages (Create/Describe/List/Update, List
filtered by group and approval status, sorted by CreationTime); the twin adds what SageMaker also does, the
EventBridge "SageMaker Model Package State Change" event when a versioned package is created and each time it is
updated (an approval repeated is a repeated event), and stamps CreationTime and LastModifiedTime with the twin's
virtual clock (moto's are wall-clock times, which the reconciliation would compare with the policy's).

Shape: the published sample (https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html,
"Model package state change"): the package's DescribeModelPackage fields, times as ISO strings with a `Z`,
`resources` = [the package ARN]. Times are the twin's virtual clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from moto.core.responses import ActionResult
from moto.sagemaker.models import SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

from twin.bus import format_event_time
from twin.sagemaker_base import SimulatorBase, dt

MODEL_PACKAGE_STATE_CHANGE = "SageMaker Model Package State Change"
_EVENT_FIELDS = (
    "ModelPackageGroupName",
    "ModelPackageVersion",
    "ModelPackageArn",
    "ModelPackageDescription",
    "CreationTime",
    "InferenceSpecification",
    "ModelPackageStatus",
    "ModelPackageStatusDetails",
    "CertifyForMarketplace",
    "ModelApprovalStatus",
    "ApprovalDescription",
    "MetadataProperties",
    "ModelMetrics",
    "LastModifiedTime",
)


class RegistryMixin(SimulatorBase):
    """Emit the model package event on CreateModelPackage and UpdateModelPackage."""

    def registry_handlers(self) -> dict[str, Callable[[SageMakerResponse], ActionResult]]:
        """moto's response methods to replace (by name): each runs moto's, then sends the event."""
        return {
            "create_model_package": self._after(SageMakerResponse.create_model_package, created=True),
            "update_model_package": self._after(SageMakerResponse.update_model_package, created=False),
        }

    def _after(
        self, original: Callable[[SageMakerResponse], ActionResult], *, created: bool
    ) -> Callable[[SageMakerResponse], ActionResult]:
        def handle(response: SageMakerResponse) -> ActionResult:
            result = original(response)
            outcome = result.result
            arn = outcome.get("ModelPackageArn") if isinstance(outcome, dict) else None
            if arn:
                backend = self.backend(response.current_account, response.region)
                now = self.clock.now()
                package = backend.describe_model_package(str(arn))
                package.last_modified_time = dt(now).replace(tzinfo=None)  # naive UTC, as moto keeps its times
                if created:
                    package.creation_time = package.last_modified_time
                self.package_event(backend, str(arn), now)
            return result

        return handle

    def package_event(self, backend: SageMakerModelBackend, arn: str, when: float) -> None:
        """`SageMaker Model Package State Change` for a versioned package (unversioned ones send none here)."""
        package = backend.describe_model_package(arn)
        described = package.gen_response_object()
        if not described.get("ModelPackageGroupName"):
            return
        detail = {k: described[k] for k in _EVENT_FIELDS if described.get(k) is not None}
        detail["CreationTime"] = _iso(described.get("CreationTime"), when)
        detail["LastModifiedTime"] = format_event_time(dt(when))
        detail.setdefault("ModelPackageStatusDetails", {"ValidationStatuses": [], "ImageScanStatuses": []})
        with self.guard():
            self.emit(MODEL_PACKAGE_STATE_CHANGE, detail, arn, when)


def _iso(value: Any, when: float) -> str:
    if isinstance(value, datetime):
        return format_event_time(value)
    if isinstance(value, str) and value:
        return format_event_time(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return format_event_time(dt(when))
