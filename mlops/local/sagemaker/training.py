"""Training jobs run as local processes under SageMaker's training contract: the supervision.

A fixed pool of workers takes queued jobs, so at most ``max_concurrent_jobs`` train at once
whoever created them (users, tuning jobs); a queued job shows InProgress/Starting. Each job
runs through Starting, Downloading, Training, Uploading and rule evaluation
(`TrainingExecution`); its output goes to CloudWatch Logs and a local file, metric lines are
parsed live, MaxRuntimeInSeconds and StopTrainingJob stop its process group.

The other jobs of a training job live beside this module: training_job.py (its state and
DescribeTrainingJob answer), training_container.py (the /opt/ml tree, command and environment),
training_outputs.py (uploads), training_rules.py (Debugger and Profiler rules).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time

from mlops.local.faults import Faults
from mlops.local.sagemaker.aws import AwsClients, LogShipper
from mlops.local.sagemaker.config import SCRIPT_WITHOUT_TOOLKIT_ENV, SageMakerConfig
from mlops.local.sagemaker.processes import ManagedProcess, ResourceMonitor
from mlops.local.sagemaker.training_container import HOST, JobContainer
from mlops.local.sagemaker.training_job import (
    STATUS_MESSAGES,
    JobFailure,
    TrainingJob,
    now,
)
from mlops.local.sagemaker.training_outputs import JobOutputs, write_description
from mlops.local.sagemaker.training_rules import RuleEvaluation

logger = logging.getLogger(__name__)

SMDEBUG_END_MARKER = "training_job_end.ts"
STRAGGLER_GRACE_S = 2.0  # how long children of an exited script may hold its output open
ERROR_LINE = re.compile(r"^\s*([\w.]*(Error|Exception|Interrupt)\b.*|.*\bError:.*)$")


class TrainingRunner:
    """A queue of training jobs and ``max_concurrent_jobs`` workers that run them."""

    def __init__(self, config: SageMakerConfig, clients: AwsClients, faults: Faults) -> None:
        self.config = config
        self.clients = clients
        self.faults = faults
        self._queue: queue.Queue[TrainingJob | None] = queue.Queue()
        self._shutting_down = threading.Event()
        self._active: dict[str, TrainingJob] = {}
        self._active_lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._work, name=f"training-worker-{i}", daemon=True)
            for i in range(config.max_concurrent_jobs)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, job: TrainingJob) -> None:
        if self._shutting_down.is_set():
            job.finish("Stopped", "Stopped", "Stopped because the local SageMaker shut down")
            job.mark_done()
            return
        self._queue.put(job)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down.is_set()

    def running_count(self) -> int:
        with self._active_lock:
            return len(self._active)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.stop_event.is_set() or self._shutting_down.is_set():
                job.finish("Stopped", "Stopped", job.stop_message)
                job.mark_done()
                continue
            with self._active_lock:
                self._active[job.name] = job
            if self.shutting_down:  # shutdown() may have listed the active jobs just before
                job.request_stop("Stopped", "Stopped because the local SageMaker shut down")
            try:
                TrainingExecution(job, self).run()
            finally:
                with self._active_lock:
                    self._active.pop(job.name, None)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop queued and running jobs, then the workers (each job ends Stopped)."""
        self._shutting_down.set()
        with self._active_lock:
            active = list(self._active.values())
        for job in active:
            job.request_stop("Stopped", "Stopped because the local SageMaker shut down")
        for _ in self._workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0.1))


class TrainingExecution:
    """Runs one job through Starting, Downloading, Training, Uploading and rule evaluation."""

    def __init__(self, job: TrainingJob, runner: TrainingRunner) -> None:
        self.job = job
        self.runner = runner
        self.config = runner.config
        self.clients = runner.clients  # the service's own (logs)
        # The job's S3 reads and writes are the execution role's, as on AWS.
        data = runner.clients.for_role(job.request.get("RoleArn"))
        self.container = JobContainer(job, self.config, self.clients, data)
        self.outputs = JobOutputs(self.container)
        self.logs: LogShipper | None = None
        self.monitor: ResourceMonitor | None = None
        self.process: ManagedProcess | None = None
        self.tail: list[str] = []
        self.output_done = threading.Event()

    # --- the steps ----------------------------------------------------------------------------

    def run(self) -> None:
        job = self.job
        try:
            self._start()
            self._download()
            exit_code = self._train()
            self._conclude(exit_code)
        except JobFailure as failure:
            self._end_failed(str(failure))
        except Exception as error:
            logger.exception("training job %s broke inside the local SageMaker", job.name)
            self._end_failed(f"InternalServerError: {type(error).__name__}: {error}")
        finally:
            if self.logs is not None:
                self.logs.close()
            write_description(job)
            job.mark_done()
        RuleEvaluation(self.container, self.runner.faults, self.runner.shutting_down).run()

    def _start(self) -> None:
        job = self.job
        job.update_status_message(STATUS_MESSAGES["Starting"])
        with job.lock:
            job.training_start_time = now()
        self.container.create()
        stream = f"{job.name}/{HOST}-{int(time.time())}"
        self.logs = LogShipper(
            self.clients,
            "/aws/sagemaker/TrainingJobs",
            stream,
            job.job_dir / "logs" / "training.log",
            self.config.log_flush_interval_s,
        )
        if self.runner.faults.hits("training_fail", job.name):
            raise JobFailure(
                "AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "
                '"injected fault training_fail"\nCommand "(not run)", exit code: 1'
            )
        self.container.check_image()

    def _download(self) -> None:
        self.job.set_secondary_status("Downloading")
        self.container.download_inputs(self.logs.write)

    def _train(self) -> int:
        job = self.job
        if job.stop_event.is_set():
            return -15  # stopped while downloading: the script never starts
        job.set_secondary_status("Training")
        container = self.container
        argv = container.command()
        if self.config.image_python:
            self.logs.write(f"Starting the training toolkit: {' '.join(argv)}")
        else:
            self.logs.write(
                f"No image environment (.venv-image) and {SCRIPT_WITHOUT_TOOLKIT_ENV} set: "
                "running the script without the sagemaker-training toolkit"
            )
            self.logs.write(f"Invoking script with the following command: {' '.join(argv)}")
        environment = container.environment()
        self.process = ManagedProcess(argv, container.dirs["code"], environment, job.name)
        self.monitor = ResourceMonitor(
            self.process.pgid,
            job.job_dir / "resource_usage.json",
            self.config.resource_sample_interval_s,
        ).start()
        watchdog = threading.Thread(target=self._watch, name=f"watch-{job.name}", daemon=True)
        watchdog.start()
        for line in self.process.lines():
            self._on_line(line)
        self.output_done.set()
        exit_code = self.process.wait()
        watchdog.join(self.config.stop_grace_s + 5)
        self.outputs.usage = self.monitor.stop()
        return exit_code

    def _conclude(self, exit_code: int) -> None:
        job = self.job
        self._mark_tensors_complete()
        if job.stop_event.is_set():
            self.outputs.upload_artifacts(self.logs.write, only_if_model_saved=True)
            job.finish("Stopped", job.stop_reason, job.stop_message)
            return
        if exit_code != 0:
            self.outputs.upload_output_data()
            raise JobFailure(self._algorithm_error(exit_code))
        job.set_secondary_status("Uploading")
        self.outputs.upload_artifacts(self.logs.write)
        job.finish("Completed", "Completed", STATUS_MESSAGES["Completed"])

    def _mark_tensors_complete(self) -> None:
        """smdebug does not write its end-of-training marker when TRAINING_JOB_NAME is set
        (SageMaker tells its rule jobs instead); write it so local rules see a finished trial."""
        tensor_dir = self.container.tensor_dir()
        if tensor_dir.is_dir() and any(tensor_dir.iterdir()):
            (tensor_dir / SMDEBUG_END_MARKER).touch(exist_ok=True)

    def _end_failed(self, reason: str) -> None:
        if self.logs is not None:
            self.logs.write(f"FailureReason: {reason}")
        if self.process is not None and self.process.poll() is None:
            self.process.stop(self.config.stop_grace_s)
        if self.monitor is not None:
            self.monitor.stop()
        self.job.finish("Failed", "Failed", STATUS_MESSAGES["Failed"], reason)

    def _on_line(self, line: str) -> None:
        self.logs.write(line)
        self.job.metrics.feed(line)
        if line.strip():
            self.tail.append(line.rstrip())
            del self.tail[:-50]

    def _watch(self) -> None:
        """Stop the process on request or when MaxRuntimeInSeconds is reached."""
        job, process = self.job, self.process
        deadline = time.monotonic() + job.max_runtime_s()
        while process.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                job.request_stop("MaxRuntimeExceeded")
            if job.stop_event.wait(timeout=min(max(remaining, 0.01), 0.25)):
                job.set_secondary_status("Stopping")
                self.logs.write(f"Stopping: {job.stop_message}")
                process.stop(self.config.stop_grace_s)
                return
        # The script exited; a child it left behind would keep the log pipe open forever.
        if not self.output_done.wait(STRAGGLER_GRACE_S):
            logger.warning("%s left processes behind after exiting: killing them", job.name)
            process.kill_group()

    def _algorithm_error(self, exit_code: int) -> str:
        """AWS's FailureReason for a script that failed, with its last meaningful error line."""
        failure_file = self.container.dirs["output"] / "failure"
        written = failure_file.read_text().strip() if failure_file.is_file() else ""
        if self.config.image_python and written and exit_code > 0:
            # The toolkit wrote its own account (ExecuteUserScriptError: ExitCode, ErrorMessage
            # with the script's stderr, Command); SageMaker prefixes it with AlgorithmError.
            return f"AlgorithmError: {written}"
        # A script may explain itself in /opt/ml/output/failure; SageMaker reports that text.
        message = written or next(
            (ln.strip() for ln in reversed(self.tail) if ERROR_LINE.match(ln)), None
        )
        message = message or (self.tail[-1].strip() if self.tail else "(no output)")
        if exit_code < 0:
            message = f"killed by signal {-exit_code}" + (
                " (out of memory?)" if exit_code == -9 else ""
            )
        command = " ".join(self.process.argv) if self.process else ""
        return (
            f"AlgorithmError: ExecuteUserScriptError:\nExitCode {exit_code}\n"
            f'ErrorMessage "{message}"\nCommand "{command}", exit code: {exit_code}'
        )
