"""Endpoints served by local model server processes: deployments started, swapped, stopped.

A deployment is one model server process per production variant of an endpoint config. An
endpoint always has at most one *active* deployment that takes traffic. CreateEndpoint and
UpdateEndpoint build a new deployment in the background; only when every server of it answers
GET /ping does traffic switch to it (one assignment under the endpoint's lock), and only then
is the old deployment drained (its in-flight requests finish) and stopped. A deployment that
does not come up is stopped and, for an update, the old one keeps serving: the endpoint goes
back to InService with a FailureReason, as SageMaker's blue/green update rolls back.

An update with a CANARY or LINEAR TrafficRoutingConfiguration (traffic.py) first shifts a share
of the requests to the new deployment while the old one stays active: each request goes to the
new one with that probability (random per request, so shares are met on average). Every
WaitIntervalInSeconds the share grows to the next step; after the last step the new deployment
becomes the active one and the old one is kept for TerminationWaitInSeconds. Throughout the
shifting and the baking the alarms of AutoRollbackConfiguration are polled; one in ALARM rolls
the update back: all traffic returns to the old deployment, the new one is stopped, and the
endpoint is InService on its old config with a FailureReason naming the alarm.

The model server processes are model_servers.py, an endpoint's state endpoint_state.py, the
model and endpoint config records endpoint_records.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import secrets
import threading
import time
from typing import Any

import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from mlops.local.faults import Faults
from mlops.local.paths import contained
from mlops.local.sagemaker.aws import AwsClients
from mlops.local.sagemaker.capture import CaptureWriter
from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.endpoint_records import EndpointConfigRecord, ModelRecord
from mlops.local.sagemaker.endpoint_state import Endpoint
from mlops.local.sagemaker.model_servers import (
    INVOCATION_TIMEOUT_S,
    Deployment,
    DeploymentError,
    ModelServer,
)
from mlops.local.sagemaker.traffic import AlarmWatch, TrafficPolicy
from mlops.local.sagemaker.training_job import now

logger = logging.getLogger(__name__)


class EndpointManager:
    """Starts, swaps and stops deployments; forwards invocations to the active one."""

    def __init__(
        self,
        config: SageMakerConfig,
        clients: AwsClients,
        faults: Faults,
        models: dict[str, ModelRecord],
    ) -> None:
        self.config = config
        self.clients = clients
        self.faults = faults
        self.models = models
        self.http = urllib3.PoolManager(maxsize=32, block=False)
        self._threads: list[threading.Thread] = []
        self._deployments: set[Deployment] = set()
        self._lock = threading.Lock()
        self.alarms = AlarmWatch(lambda: clients.client("cloudwatch"))
        self.capture = CaptureWriter(lambda: clients.client("s3"))

    # --- lifecycle ----------------------------------------------------------------------------

    def create(self, endpoint: Endpoint) -> None:
        self._spawn(self._create, endpoint, name=f"create-{endpoint.name}")

    def update(
        self, endpoint: Endpoint, config: EndpointConfigRecord, policy: TrafficPolicy | None = None
    ) -> None:
        policy = policy or TrafficPolicy()
        self._spawn(self._update, endpoint, config, policy, name=f"update-{endpoint.name}")

    def delete(self, endpoint: Endpoint) -> None:
        """Stop taking traffic at once; stop the servers in the background."""
        endpoint.deleted.set()
        with endpoint.lock:
            endpoint.status = "Deleting"
            deployments = [d for d in (endpoint.active, endpoint.pending) if d is not None]
            endpoint.active = None
        self._spawn(self._stop_deployments, deployments, name=f"delete-{endpoint.name}")

    def _spawn(self, target: Any, *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _create(self, endpoint: Endpoint) -> None:
        try:
            deployment = self._deploy(endpoint, endpoint.config)
        except Exception as error:  # any failure must end in Failed, never stuck in Creating
            if not isinstance(error, DeploymentError):
                logger.exception("creating endpoint %s broke", endpoint.name)
            with endpoint.lock:
                endpoint.status = "Failed"
                endpoint.failure_reason = str(error)
                endpoint.last_modified_time = now()
            logger.warning("endpoint %s failed: %s", endpoint.name, error)
            return
        self._activate(endpoint, deployment)

    def _update(
        self, endpoint: Endpoint, config: EndpointConfigRecord, policy: TrafficPolicy
    ) -> None:
        try:
            deployment = self._deploy(endpoint, config, pending=True)
        except Exception as error:  # any failure rolls back, never stuck in Updating
            if not isinstance(error, DeploymentError):
                logger.exception("updating endpoint %s broke", endpoint.name)
            with endpoint.lock:
                endpoint.pending = None
                endpoint.status = "InService" if endpoint.active else "Failed"
                endpoint.failure_reason = (
                    f"Update to endpoint config {config.name} failed and was rolled back; the "
                    f"endpoint still serves {endpoint.config.name}. {error}"
                )[:1024]
                endpoint.last_modified_time = now()
            logger.warning("update of endpoint %s rolled back: %s", endpoint.name, error)
            return
        for share in policy.shares[:-1]:
            with endpoint.lock:
                if endpoint.deleted.is_set() or endpoint.pending is not deployment:
                    return  # deleted meanwhile: delete() stops the pending deployment
                endpoint.pending_share = share
            logger.info("endpoint %s sends %.0f%% to %s", endpoint.name, 100 * share, config.name)
            alarm = self._watch(endpoint, policy.alarms, policy.wait_s)
            if alarm is not None:
                self._roll_back(endpoint, deployment, endpoint.active, alarm)
                return
        self._activate(endpoint, deployment, policy.bake_s, policy.alarms)

    def _watch(self, endpoint: Endpoint, alarms: tuple[str, ...], seconds: float) -> str | None:
        """Wait ``seconds`` (less if the endpoint is deleted); the first alarm that trips."""
        deadline = time.monotonic() + seconds
        while True:
            alarm = self.alarms.tripped(alarms)
            remaining = deadline - time.monotonic()
            if alarm is not None or remaining <= 0:
                return alarm
            if endpoint.deleted.wait(min(remaining, self.config.alarm_poll_interval_s)):
                return None

    def _roll_back(
        self, endpoint: Endpoint, new: Deployment, old: Deployment | None, alarm: str
    ) -> None:
        """An alarm tripped: every request goes to ``old`` again and ``new`` is stopped."""
        with endpoint.lock:
            if endpoint.deleted.is_set() or old is None:
                return
            endpoint.active, endpoint.pending, endpoint.pending_share = old, None, 0.0
            endpoint.config = old.config
            endpoint.status = "InService"
            endpoint.failure_reason = (
                f"Update to endpoint config {new.config.name} was rolled back because alarm "
                f"{alarm} was in ALARM state; the endpoint serves {old.config.name}."
            )[:1024]
            endpoint.last_modified_time = now()
            history = self._note_history(endpoint, old.config.name)
        self._write_history(endpoint, history)
        logger.warning(
            "endpoint %s rolled back to %s: alarm %s", endpoint.name, old.config.name, alarm
        )
        self._retire(new)

    def _activate(
        self,
        endpoint: Endpoint,
        deployment: Deployment,
        baking_s: float = 0.0,
        alarms: tuple[str, ...] = (),
    ) -> None:
        """Switch traffic to a deployment whose servers all answer /ping; retire the old one.

        The switch is one assignment under the endpoint's lock, the same lock under which
        every request picks its server, so each request goes wholly to the old or the new one.
        During a blue/green baking period (TerminationWaitInSeconds) the endpoint stays
        Updating, as on AWS, and the old fleet is kept until the period ends; an alarm that
        trips meanwhile rolls the update back to the old fleet.
        """
        with endpoint.lock:
            deleted = endpoint.deleted.is_set()
            if not deleted:
                old, endpoint.active, endpoint.pending = endpoint.active, deployment, None
                endpoint.pending_share = 0.0
                endpoint.config = deployment.config
                endpoint.status = "Updating" if baking_s > 0 and old is not None else "InService"
                endpoint.failure_reason = None
                endpoint.last_modified_time = now()
                history = self._note_history(endpoint, deployment.config.name)
        if deleted:
            self._stop_deployments([deployment])
            return
        logger.info("endpoint %s serves %s", endpoint.name, deployment.config.name)
        self._write_history(endpoint, history)
        if old is None:
            return
        if baking_s > 0:
            alarm = self._watch(endpoint, alarms, baking_s)
            if alarm is not None:
                self._roll_back(endpoint, deployment, old, alarm)
                return
            if not endpoint.deleted.is_set():
                with endpoint.lock:
                    if endpoint.active is deployment and endpoint.status == "Updating":
                        endpoint.status = "InService"
                        endpoint.last_modified_time = now()
        self._retire(old)

    @staticmethod
    def _note_history(endpoint: Endpoint, config_name: str) -> list[dict[str, Any]]:
        """Record which config serves from now (call under the endpoint's lock)."""
        endpoint.history.append({"EndpointConfigName": config_name, "Since": now().isoformat()})
        return list(endpoint.history)

    def _write_history(self, endpoint: Endpoint, history: list[dict[str, Any]]) -> None:
        history_file = contained(self.config.state_dir / "endpoints", endpoint.name, "history.json")
        history_file.write_text(json.dumps(history, indent=1))

    def _deploy(
        self, endpoint: Endpoint, config: EndpointConfigRecord, pending: bool = False
    ) -> Deployment:
        deployment = Deployment(config, deployment_id=f"{int(time.time())}-{secrets.token_hex(3)}")
        with self._lock:
            self._deployments.add(deployment)
        if pending:
            with endpoint.lock:
                endpoint.pending = deployment
        try:
            for variant in deployment.variants():
                model = self.models.get(variant["ModelName"])
                if model is None:
                    raise DeploymentError(f"model {variant['ModelName']} no longer exists")
                server = ModelServer(
                    self,
                    endpoint.name,
                    variant,
                    model,
                    contained(
                        self.config.state_dir / "endpoints",
                        endpoint.name,
                        deployment.deployment_id,
                        variant["VariantName"],
                    ),
                    deployment.deployment_id,
                )
                server.data_capture = config.request.get("DataCaptureConfig")
                deployment.servers[variant["VariantName"]] = server
                server.start(endpoint.deleted)
        except Exception:
            self._stop_deployments([deployment])
            raise
        return deployment

    def _retire(self, deployment: Deployment) -> None:
        """Let in-flight requests of a replaced deployment finish, then stop it."""
        for server in deployment.servers.values():
            server.drain(self.config.drain_timeout_s)
        self._stop_deployments([deployment])

    def _stop_deployments(self, deployments: list[Deployment]) -> None:
        for deployment in deployments:
            deployment.stop()
            with self._lock:
                self._deployments.discard(deployment)

    def shutdown(self) -> None:
        with self._lock:
            deployments = list(self._deployments)
            threads = list(self._threads)
        for deployment in deployments:
            for server in deployment.servers.values():
                with contextlib.suppress(Exception):
                    server.stop()
        for thread in threads:
            thread.join(10)
        self.capture.shutdown()
        self.http.clear()

    # --- traffic ------------------------------------------------------------------------------

    def route(self, endpoint: Endpoint, target_variant: str | None) -> ModelServer | None:
        """The server for one request, counted in flight (release it when done)."""
        with endpoint.lock:
            deployment = endpoint.active
            if deployment is None:
                return None
            shifting, share = endpoint.pending, endpoint.pending_share
            if shifting is not None and share > 0 and random.random() < share:
                deployment = shifting  # random per request: the share holds on average
            if target_variant and target_variant not in deployment.servers:
                raise KeyError(target_variant)
            server = deployment.pick(target_variant)
            server.acquire()
            return server

    def record_errors(self, endpoint_name: str, variant: str, status: int) -> None:
        """Invocation4XXErrors / Invocation5XXErrors in AWS/SageMaker, as SageMaker publishes
        them, so an endpoint's error alarm (a rollback alarm) sees a failing model. Only when
        the local cloud's CloudWatch is configured, and never failing the invocation."""
        if status < 400 or "cloudwatch" not in self.clients.endpoint_urls:
            return
        name = "Invocation5XXErrors" if status >= 500 else "Invocation4XXErrors"
        try:
            self.clients.client("cloudwatch").put_metric_data(
                Namespace="AWS/SageMaker",
                MetricData=[
                    {
                        "MetricName": name,
                        "Dimensions": [
                            {"Name": "EndpointName", "Value": endpoint_name},
                            {"Name": "VariantName", "Value": variant},
                        ],
                        "Value": 1.0,
                        "Unit": "None",
                    }
                ],
            )
        except (ClientError, BotoCoreError) as error:
            logger.debug("could not put %s of %s: %s", name, endpoint_name, error)

    def forward(
        self, server: ModelServer, body: bytes, content_type: str | None, accept: str | None
    ) -> urllib3.BaseHTTPResponse:
        headers = {"Content-Type": content_type or "application/octet-stream"}
        if accept:
            headers["Accept"] = accept
        return self.http.request(
            "POST",
            f"{server.url}/invocations",
            body=body,
            headers=headers,
            timeout=INVOCATION_TIMEOUT_S,
            retries=False,
        )
