"""The state of one endpoint: what DescribeEndpoint answers, and which deployment serves.

An endpoint always has at most one *active* deployment that takes traffic and, during
CreateEndpoint or UpdateEndpoint, one *pending* deployment that is coming up; endpoints.py
(`EndpointManager`) moves them, this module keeps them and answers from them.
"""

from __future__ import annotations

import threading
from typing import Any

from mlops.local.sagemaker.endpoint_records import EndpointConfigRecord
from mlops.local.sagemaker.model_servers import Deployment
from mlops.local.sagemaker.training_job import now


class Endpoint:
    """State of one endpoint (DescribeEndpoint) and its active/pending deployments."""

    def __init__(self, name: str, arn: str, config: EndpointConfigRecord, request: dict[str, Any]):
        self.name = name
        self.arn = arn
        self.request = request
        self.config = config  # the config that serves (or is being created)
        self.lock = threading.RLock()
        self.status = "Creating"
        self.failure_reason: str | None = None
        self.creation_time = now()
        self.last_modified_time = self.creation_time
        self.active: Deployment | None = None
        self.pending: Deployment | None = None
        # During a CANARY/LINEAR update: the share of requests the pending deployment takes.
        self.pending_share = 0.0
        self.deleted = threading.Event()
        # Which endpoint config served from when; also in <state>/endpoints/<name>/history.json.
        self.history: list[dict[str, Any]] = []

    def describe(self) -> dict[str, Any]:
        with self.lock:
            response: dict[str, Any] = {
                "EndpointName": self.name,
                "EndpointArn": self.arn,
                "EndpointConfigName": self.config.name,
                "EndpointStatus": self.status,
                "FailureReason": self.failure_reason,
                "CreationTime": self.creation_time,
                "LastModifiedTime": self.last_modified_time,
            }
            if self.active is not None:
                response["ProductionVariants"] = variant_summaries(self.active)
                response["DataCaptureConfig"] = capture_summary(self.active.config.request)
            if self.pending is not None and self.status == "Updating":
                response["PendingDeploymentSummary"] = {
                    "EndpointConfigName": self.pending.config.name,
                    "ProductionVariants": variant_summaries(self.pending, pending=True),
                    "StartTime": self.pending.started_at,
                }
            return {k: v for k, v in response.items() if v is not None}

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "EndpointName": self.name,
                "EndpointArn": self.arn,
                "CreationTime": self.creation_time,
                "LastModifiedTime": self.last_modified_time,
                "EndpointStatus": self.status,
            }


def variant_summaries(deployment: Deployment, pending: bool = False) -> list[dict[str, Any]]:
    summaries = []
    for variant in deployment.variants():
        server = deployment.servers.get(variant["VariantName"])
        running = 1 if server is not None and server.port is not None else 0
        weight = float(variant.get("InitialVariantWeight", 1.0))
        summary: dict[str, Any] = {
            "VariantName": variant["VariantName"],
            "CurrentWeight": weight,
            "DesiredWeight": weight,
            # One local process serves each variant, whatever InitialInstanceCount asks for.
            "CurrentInstanceCount": running,
            "DesiredInstanceCount": variant.get("InitialInstanceCount", 1),
        }
        image = server.model.describe_image() if server is not None else None
        if image:
            summary["DeployedImages"] = [
                {
                    "SpecifiedImage": image,
                    "ResolvedImage": image,
                    "ResolutionTime": deployment.started_at,
                }
            ]
        if pending and "InstanceType" in variant:
            summary["InstanceType"] = variant["InstanceType"]
        summaries.append(summary)
    return summaries


def capture_summary(config_request: dict[str, Any]) -> dict[str, Any] | None:
    """DescribeEndpoint's DataCaptureConfig: the serving config's, with its status."""
    capture = config_request.get("DataCaptureConfig")
    if not capture:
        return None
    enabled = bool(capture.get("EnableCapture", True))
    summary = {
        "EnableCapture": enabled,
        "CaptureStatus": "Started" if enabled else "Stopped",
        "CurrentSamplingPercentage": capture["InitialSamplingPercentage"],
        "DestinationS3Uri": capture["DestinationS3Uri"],
        # Required in botocore's DataCaptureConfigSummary; what AWS sends without a key is
        # not documented (an empty string here).
        "KmsKeyId": capture.get("KmsKeyId", ""),
    }
    return summary
