"""Models, endpoint configs and endpoints served by local model server processes.

A deployment is one model server process per production variant of an endpoint config. An
endpoint always has at most one *active* deployment that takes traffic. CreateEndpoint and
UpdateEndpoint build a new deployment in the background; only when every server of it answers
GET /ping does traffic switch to it (one assignment under the endpoint's lock), and only then
is the old deployment drained (its in-flight requests finish) and stopped. A deployment that
does not come up is stopped and, for an update, the old one keeps serving: the endpoint goes
back to InService with a FailureReason, as SageMaker's blue/green update rolls back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from mlops.local.faults import Faults
from mlops.local.paths import PathEscapeError, contained
from mlops.local.sagemaker.aws import (
    AwsClients,
    LogShipper,
    S3UriError,
    aws_env_for_children,
    extract_tarball,
)
from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.processes import ManagedProcess, ResourceMonitor
from mlops.local.sagemaker.training import now

logger = logging.getLogger(__name__)

MODEL_SERVER = Path(__file__).resolve().parents[1] / "model_server.py"
INVOCATION_TIMEOUT_S = 60.0  # SageMaker's real-time invocation limit


def _inside(folder: Path, program: str) -> Path:
    """SAGEMAKER_PROGRAM comes from the request: it names a file inside ``folder`` or nothing."""
    try:
        return contained(folder, program)
    except PathEscapeError as error:
        raise DeploymentError(f"SAGEMAKER_PROGRAM {error}") from None


class DeploymentError(Exception):
    """A model server did not come up; the message is the endpoint's FailureReason."""


@dataclass
class ModelRecord:
    name: str
    arn: str
    request: dict[str, Any]
    creation_time: dt.datetime = field(default_factory=now)

    @property
    def container(self) -> dict[str, Any]:
        if "PrimaryContainer" in self.request:
            return self.request["PrimaryContainer"]
        return self.request["Containers"][0]

    def describe_image(self) -> str | None:
        return self.container.get("Image")


@dataclass
class EndpointConfigRecord:
    name: str
    arn: str
    request: dict[str, Any]
    creation_time: dt.datetime = field(default_factory=now)

    def describe(self) -> dict[str, Any]:
        echoed = {k: v for k, v in self.request.items() if k not in {"Tags", "EndpointConfigName"}}
        return {
            "EndpointConfigName": self.name,
            "EndpointConfigArn": self.arn,
            "CreationTime": self.creation_time,
            **echoed,
        }


# --- one model server -------------------------------------------------------------------------


class ModelServer:
    """One model server process for one production variant, with in-flight accounting."""

    def __init__(
        self,
        manager: EndpointManager,
        endpoint_name: str,
        variant: dict[str, Any],
        model: ModelRecord,
        work_dir: Path,
        deployment_id: str,
    ) -> None:
        self.manager = manager
        self.endpoint_name = endpoint_name
        self.variant = variant
        self.variant_name: str = variant["VariantName"]
        self.model = model
        self.work_dir = work_dir
        self.deployment_id = deployment_id
        self.process: ManagedProcess | None = None
        self.logs: LogShipper | None = None
        self.monitor: ResourceMonitor | None = None
        self.port: int | None = None
        self.tail: list[str] = []
        self.in_flight = 0
        self._idle = threading.Condition()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, cancelled: threading.Event) -> None:
        """Download the model, start the server, wait for /ping (DeploymentError if not)."""
        config = self.manager.config
        self.work_dir.mkdir(parents=True, exist_ok=True)
        model_dir = self._fetch_model()
        inference = self._inference_file(model_dir)
        self.logs = LogShipper(
            self.manager.clients,
            f"/aws/sagemaker/Endpoints/{self.endpoint_name}",
            f"{self.variant_name}/{self.deployment_id}",
            self.work_dir / "server.log",
            config.log_flush_interval_s,
        )
        port_file = self.work_dir / "port"
        port_file.unlink(missing_ok=True)
        argv = [
            config.python,
            str(MODEL_SERVER),
            "--model-dir",
            str(model_dir),
            "--inference",
            str(inference),
            "--port-file",
            str(port_file),
        ]
        env = {
            **os.environ,
            **aws_env_for_children(self.manager.clients),
            "PYTHONUNBUFFERED": "1",
            "SAGEMAKER_ENDPOINT_NAME": self.endpoint_name,
            "SAGEMAKER_VARIANT_NAME": self.variant_name,
            **(self.model.container.get("Environment") or {}),
        }
        self.process = ManagedProcess(
            argv, model_dir, env, f"model server {self.endpoint_name}/{self.variant_name}"
        )
        self.monitor = ResourceMonitor(
            self.process.pgid,
            self.work_dir / "resource_usage.json",
            config.resource_sample_interval_s,
        ).start()
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self._wait_until_healthy(port_file, cancelled)

    def _fetch_model(self) -> Path:
        model_dir = self.work_dir / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        url = self.model.container.get("ModelDataUrl")
        if not url:
            return model_dir
        archive = self.work_dir / "model.tar.gz"
        try:
            self.manager.clients.download_file(url, archive)
            extract_tarball(archive, model_dir)
        except (ClientError, BotoCoreError, S3UriError, OSError) as error:
            raise DeploymentError(
                f"Failed to download model data for production variant {self.variant_name} "
                f"from {url}: {error}"
            ) from error
        return model_dir

    def _inference_file(self, model_dir: Path) -> Path:
        """SAGEMAKER_PROGRAM (default inference.py): from SAGEMAKER_SUBMIT_DIRECTORY when it is
        an S3 tarball, else the archive's own code/, else the repository's training/."""
        env = self.model.container.get("Environment") or {}
        program = env.get("SAGEMAKER_PROGRAM", "inference.py")
        submit = env.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
        candidates = []
        if submit.startswith("s3://"):
            code_dir = self.work_dir / "code"
            archive = self.work_dir / "sourcedir.tar.gz"
            try:
                self.manager.clients.download_file(submit, archive)
                extract_tarball(archive, code_dir)
            except (ClientError, BotoCoreError, S3UriError, OSError) as error:
                raise DeploymentError(
                    f"Failed to download inference code {submit}: {error}"
                ) from error
            candidates.append(_inside(code_dir, program))
        candidates += [
            _inside(model_dir / "code", program),
            self.manager.config.repo_root / "training" / program,
        ]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise DeploymentError(
            f"No inference code for production variant {self.variant_name}: looked for "
            + ", ".join(str(c) for c in candidates)
        )

    def _read_output(self) -> None:
        assert self.process is not None and self.logs is not None
        for line in self.process.lines():
            self.logs.write(line)
            if line.strip():
                self.tail.append(line.rstrip())
                del self.tail[:-20]

    def _wait_until_healthy(self, port_file: Path, cancelled: threading.Event) -> None:
        manager = self.manager
        timeout = self.variant.get(
            "ContainerStartupHealthCheckTimeoutInSeconds", manager.config.endpoint_start_timeout_s
        )
        deadline = time.monotonic() + timeout
        if manager.faults.hits("endpoint_start_fail", self.endpoint_name, self.model.name):
            raise DeploymentError(self._ping_failure("injected fault endpoint_start_fail"))
        while time.monotonic() < deadline and not cancelled.is_set():
            if self.process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(2)
                raise DeploymentError(
                    self._ping_failure(f"the server exited with code {self.process.poll()}")
                )
            if self.port is None and port_file.is_file():
                self.port = int(port_file.read_text())
            if self.port is not None and self._ping():
                logger.info(
                    "model server of %s/%s is up at %s",
                    self.endpoint_name,
                    self.variant_name,
                    self.url,
                )
                return
            time.sleep(manager.config.ping_interval_s)
        if cancelled.is_set():
            raise DeploymentError("the deployment was cancelled (endpoint deleted)")
        raise DeploymentError(self._ping_failure(f"no answer within {timeout:g} s"))

    def _ping_failure(self, detail: str) -> str:
        last = self.tail[-1] if self.tail else "(no output)"
        return (
            f"The primary container for production variant {self.variant_name} did not pass "
            f"the ping health check ({detail}). Last log line: {last}"
        )[:1024]

    def _ping(self) -> bool:
        try:
            response = self.manager.http.request(
                "GET", f"{self.url}/ping", timeout=2.0, retries=False
            )
        except urllib3.exceptions.HTTPError:
            return False
        return response.status == 200

    # --- traffic ------------------------------------------------------------------------------

    def acquire(self) -> None:
        with self._idle:
            self.in_flight += 1

    def release(self) -> None:
        with self._idle:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.notify_all()

    def drain(self, timeout: float) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self.in_flight == 0, timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(self.manager.config.stop_grace_s)
        if self._reader is not None:
            self._reader.join(5)
        if self.monitor is not None:
            self.monitor.stop()
        if self.logs is not None:
            self.logs.close()


@dataclass(eq=False)  # identity semantics: deployments are kept in sets
class Deployment:
    """The servers of one endpoint config: one per production variant."""

    config: EndpointConfigRecord
    deployment_id: str
    servers: dict[str, ModelServer] = field(default_factory=dict)
    started_at: dt.datetime = field(default_factory=now)

    def variants(self) -> list[dict[str, Any]]:
        return self.config.request["ProductionVariants"]

    def pick(self, target_variant: str | None) -> ModelServer:
        """The variant named by TargetVariant, else one chosen by InitialVariantWeight."""
        if target_variant:
            return self.servers[target_variant]
        variants = self.variants()
        weights = [float(v.get("InitialVariantWeight", 1.0)) for v in variants]
        if sum(weights) <= 0:
            weights = [1.0] * len(variants)
        chosen = random.choices(variants, weights=weights)[0]
        return self.servers[chosen["VariantName"]]

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


# --- endpoints --------------------------------------------------------------------------------


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

    # --- lifecycle ----------------------------------------------------------------------------

    def create(self, endpoint: Endpoint) -> None:
        self._spawn(self._create, endpoint, name=f"create-{endpoint.name}")

    def update(
        self, endpoint: Endpoint, config: EndpointConfigRecord, baking_s: float = 0.0
    ) -> None:
        self._spawn(self._update, endpoint, config, baking_s, name=f"update-{endpoint.name}")

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

    def _update(self, endpoint: Endpoint, config: EndpointConfigRecord, baking_s: float) -> None:
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
        self._activate(endpoint, deployment, baking_s)

    def _activate(self, endpoint: Endpoint, deployment: Deployment, baking_s: float = 0.0) -> None:
        """Switch traffic to a deployment whose servers all answer /ping; retire the old one.

        The switch is one assignment under the endpoint's lock, the same lock under which
        every request picks its server, so each request goes wholly to the old or the new one.
        During a blue/green baking period (TerminationWaitInSeconds) the endpoint stays
        Updating, as on AWS, and the old fleet is kept until the period ends.
        """
        with endpoint.lock:
            deleted = endpoint.deleted.is_set()
            if not deleted:
                old, endpoint.active, endpoint.pending = endpoint.active, deployment, None
                endpoint.config = deployment.config
                endpoint.status = "Updating" if baking_s > 0 and old is not None else "InService"
                endpoint.failure_reason = None
                endpoint.last_modified_time = now()
                endpoint.history.append(
                    {"EndpointConfigName": deployment.config.name, "Since": now().isoformat()}
                )
                history = list(endpoint.history)
        if deleted:
            self._stop_deployments([deployment])
            return
        logger.info("endpoint %s serves %s", endpoint.name, deployment.config.name)
        history_file = contained(self.config.state_dir / "endpoints", endpoint.name, "history.json")
        history_file.write_text(json.dumps(history, indent=1))
        if old is None:
            return
        if baking_s > 0 and not endpoint.deleted.wait(baking_s):
            with endpoint.lock:
                if endpoint.active is deployment and endpoint.status == "Updating":
                    endpoint.status = "InService"
                    endpoint.last_modified_time = now()
        self._retire(old)

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
        self.http.clear()

    # --- traffic ------------------------------------------------------------------------------

    def route(self, endpoint: Endpoint, target_variant: str | None) -> ModelServer | None:
        """The server for one request, counted in flight (release it when done)."""
        with endpoint.lock:
            deployment = endpoint.active
            if deployment is None:
                return None
            if target_variant and target_variant not in deployment.servers:
                raise KeyError(target_variant)
            server = deployment.pick(target_variant)
            server.acquire()
            return server

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
