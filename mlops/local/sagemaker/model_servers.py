"""Model server processes: one per production variant of an endpoint config (a deployment).

A `ModelServer` fetches the model's ModelDataUrl, unpacks it, starts mlops/local/model_server.py
(the SageMaker inference toolkit's contract: /ping and /invocations) under the model's
environment, waits until GET /ping answers, ships its output to CloudWatch Logs, and counts the
requests in flight so an old deployment can drain before it stops. A `Deployment` is the servers
of one endpoint config; endpoints.py decides which deployment takes traffic.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
from mlops.local.sagemaker.endpoint_records import EndpointConfigRecord, ModelRecord
from mlops.local.sagemaker.processes import ManagedProcess, ResourceMonitor
from mlops.local.sagemaker.training_job import now

logger = logging.getLogger(__name__)

MODEL_SERVER = Path(__file__).resolve().parents[1] / "model_server.py"
INVOCATION_TIMEOUT_S = 60.0  # SageMaker's real-time invocation limit


class ServerHost(Protocol):
    """What a model server needs of the service that starts it (endpoints.EndpointManager)."""

    config: SageMakerConfig
    clients: AwsClients
    faults: Faults
    http: urllib3.PoolManager


def _inside(folder: Path, program: str) -> Path:
    """SAGEMAKER_PROGRAM comes from the request: it names a file inside ``folder`` or nothing."""
    try:
        return contained(folder, program)
    except PathEscapeError as error:
        raise DeploymentError(f"SAGEMAKER_PROGRAM {error}") from None


class DeploymentError(Exception):
    """A model server did not come up; the message is the endpoint's FailureReason."""


class ModelServer:
    """One model server process for one production variant, with in-flight accounting."""

    def __init__(
        self,
        manager: ServerHost,
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
        self.data_capture: dict[str, Any] | None = None  # the config's DataCaptureConfig
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
