"""What a training job leaves behind: its model, output data, checkpoints, tensors, profile.

At the end of a job SageMaker uploads /opt/ml/model as model.tar.gz (always for a completed
job, even when empty), /opt/ml/output/data as output.tar.gz, the checkpoint folder to
CheckpointConfig.S3Uri, Debugger's tensors and the Profiler's system metrics; all with the
execution role's credentials. describe.json is the local addition: the job's last
DescribeTrainingJob answer, for reports that read a job after the service is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlops.local.sagemaker import protocol
from mlops.local.sagemaker.aws import S3UriError, make_tarball
from mlops.local.sagemaker.processes import profiler_system_metrics, total_memory_bytes
from mlops.local.sagemaker.training_container import JobContainer, write_json
from mlops.local.sagemaker.training_job import JobFailure, TrainingJob

logger = logging.getLogger(__name__)


class JobOutputs:
    """Uploads one job's outputs to S3 (the role's credentials, the container's folders)."""

    def __init__(self, container: JobContainer) -> None:
        self.container = container
        self.job = container.job
        self.data = container.data
        # What the resource monitor measured (set once it stopped): the Profiler's samples.
        self.usage: dict[str, Any] | None = None

    def upload_artifacts(
        self, say: Callable[[str], None], only_if_model_saved: bool = False
    ) -> None:
        """model.tar.gz (always for a completed job, like AWS, even when empty; for a stopped
        job only when the script saved something), then output data, checkpoints, tensors."""
        job = self.job
        model_dir = self.container.dirs["model"]
        try:
            if not only_if_model_saved or any(model_dir.iterdir()):
                archive = make_tarball(model_dir, job.job_dir / "upload" / "model.tar.gz")
                self.data.upload_file(archive, job.model_artifacts_uri)
            self.upload_output_data()
            self._upload_side_outputs()
        except (ClientError, BotoCoreError, OSError, S3UriError) as error:
            raise JobFailure(f"InternalServerError: could not upload the model: {error}") from error
        say(f"Uploaded the model to {job.model_artifacts_uri}")

    def upload_output_data(self) -> None:
        output_data = self.container.dirs["output_data"]
        if output_data.is_dir() and any(output_data.iterdir()):
            archive = make_tarball(output_data, self.job.job_dir / "upload" / "output.tar.gz")
            try:
                self.data.upload_file(archive, self.job.output_uri("output.tar.gz"))
            except (ClientError, BotoCoreError) as error:
                logger.warning("output data of %s not uploaded: %s", self.job.name, error)

    def _upload_side_outputs(self) -> None:
        """Checkpoints to CheckpointConfig.S3Uri, tensors to <S3OutputPath>/<job>/debug-output."""
        request = self.job.request
        checkpoints = self.container.checkpoint_dir()
        if "CheckpointConfig" in request and checkpoints.is_dir():
            self.data.upload_directory(checkpoints, request["CheckpointConfig"]["S3Uri"])
        hook = request.get("DebugHookConfig") if self.job.debugger_available else None
        if hook and self.container.tensor_dir().is_dir():
            target = f"{hook['S3OutputPath'].rstrip('/')}/{self.job.name}/debug-output"
            self.data.upload_directory(self.container.tensor_dir(), target)
        self._upload_system_profile()

    def _upload_system_profile(self) -> None:
        """The job's CPU and memory samples to <ProfilerConfig.S3OutputPath>/<job>/profiler-output/
        system/, in the Profiler's format, where AWS writes them for a profiled job."""
        if not self.job.debugger_available:
            return  # the Profiler is part of Debugger; train.py writes its own profile
        profiler = self.job.request.get("ProfilerConfig") or {}
        usage = self.usage
        if not profiler.get("S3OutputPath") or profiler.get("DisableProfiler") or not usage:
            return
        lines = profiler_system_metrics(usage, total_memory_bytes())
        if not lines:
            return
        local = self.job.job_dir / "upload" / "system-metrics.json"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(lines)
        stamp = int(usage.get("started_epoch_s", time.time()))
        prefix = f"{profiler['S3OutputPath'].rstrip('/')}/{self.job.name}/profiler-output/system"
        self.data.upload_file(local, f"{prefix}/incremental/{stamp}.algo-1.json")


def write_description(job: TrainingJob) -> None:
    """describe.json in the job dir: what reports read after the service is gone."""
    try:
        operation = protocol.control_plane_operation("DescribeTrainingJob")
        body = protocol.serialize(job.describe(), operation.output_shape)
        write_json(job.job_dir / "describe.json", body)
    except (OSError, protocol.ShapeMismatch):
        logger.exception("could not write describe.json of %s", job.name)
