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
from dataclasses import dataclass, field

from pipeline_common.jobs import TORCH_DISTRIBUTED_HYPERPARAMETER

from mlops.local.faults import Faults
from mlops.local.sagemaker.aws import AwsClients, LogShipper
from mlops.local.sagemaker.config import SCRIPT_WITHOUT_TOOLKIT_ENV, SageMakerConfig
from mlops.local.sagemaker.processes import ManagedProcess, ResourceMonitor
from mlops.local.sagemaker.training_container import (
    CONTAINER_MASTER_PORT,
    HOST,
    JobContainer,
    LocalNetwork,
)
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
# A host whose collective broke because another host went away (Gloo's and NCCL's words).
PEER_LOST = re.compile(
    r"Connection (closed|reset) by peer|gloo.*(Connection|Timed out|timed out)|NCCL.*remote",
    re.IGNORECASE,
)
# How long a host that failed only by losing a peer waits for the host that caused it to fail
# on its own, before the others are stopped (so FailureReason names the cause).
PEER_FAILURE_GRACE_S = 10.0


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


@dataclass(eq=False)
class HostRun:
    """One instance of a job: its /opt/ml tree, its log stream, its process and how it ended."""

    name: str
    container: JobContainer
    logs: LogShipper
    process: ManagedProcess | None = None
    reader: threading.Thread | None = None
    tail: list[str] = field(default_factory=list)
    exit_code: int | None = None
    stopped: bool = False  # stopped by the service (a stop, the runtime limit, a failed peer)


class TrainingExecution:
    """Runs one job through Starting, Downloading, Training, Uploading and rule evaluation.

    A job of InstanceCount N runs N hosts (algo-1 ... algo-N), each a process of the training
    toolkit with its own /opt/ml tree and log stream; they rendezvous over 127.0.0.1 through
    torchrun. The job fails, as on SageMaker, when one host fails: the others are stopped and
    FailureReason names the host. Only algo-1's model and output are uploaded.
    """

    def __init__(self, job: TrainingJob, runner: TrainingRunner) -> None:
        self.job = job
        self.runner = runner
        self.config = runner.config
        self.clients = runner.clients  # the service's own (logs)
        # The job's S3 reads and writes are the execution role's, as on AWS.
        data = runner.clients.for_role(job.request.get("RoleArn"))
        self.container = JobContainer(job, self.config, self.clients, data)
        self.outputs = JobOutputs(self.container)
        self.logs: LogShipper | None = None  # algo-1's
        self.hosts: list[HostRun] = []
        self.monitor: ResourceMonitor | None = None
        self.process: ManagedProcess | None = None  # algo-1's
        self.failed: HostRun | None = None

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
            self.container.close()
            for host in self.hosts:
                host.logs.close()
            write_description(job)
            job.mark_done()
        RuleEvaluation(self.container, self.runner.faults, self.runner.shutting_down).run()

    def _start(self) -> None:
        job = self.job
        job.update_status_message(STATUS_MESSAGES["Starting"])
        with job.lock:
            job.training_start_time = now()
        container = self.container
        container.create()
        if len(container.hosts) > 1 or distributed_launch(job):
            container.network = LocalNetwork(
                job.job_dir / "network", container.hosts, self.config.image_python
            )
        stamp = int(time.time())
        for name in container.hosts:
            host_container = container if name == HOST else container.host_container(name)
            log_file = "training.log" if name == HOST else f"{name}.log"
            logs = LogShipper(
                self.clients,
                "/aws/sagemaker/TrainingJobs",
                f"{job.name}/{name}-{stamp}",  # SageMaker's stream name: <job>/algo-N-<epoch s>
                job.job_dir / "logs" / log_file,
                self.config.log_flush_interval_s,
            )
            self.hosts.append(HostRun(name, host_container, logs))
        self.logs = self.hosts[0].logs
        if self.runner.faults.hits("training_fail", job.name):
            raise JobFailure(
                "AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "
                '"injected fault training_fail"\nCommand "(not run)", exit code: 1'
            )
        container.check_image()

    def _download(self) -> None:
        self.job.set_secondary_status("Downloading")
        self.container.download_inputs(self.logs.write)
        for host in self.hosts[1:]:
            self.container.replicate_to(host.container)
            host.logs.write(f"Channels, source and checkpoints in place for {host.name}")

    def _train(self) -> int:
        job = self.job
        if job.stop_event.is_set():
            return -15  # stopped while downloading: the script never starts
        job.set_secondary_status("Training")
        argv = self.container.command()
        for host in self.hosts:
            if self.config.image_python:
                host.logs.write(f"Starting the training toolkit: {' '.join(argv)}")
            else:
                host.logs.write(
                    f"No image environment (.venv-image) and {SCRIPT_WITHOUT_TOOLKIT_ENV} set: "
                    "running the script without the sagemaker-training toolkit"
                )
                host.logs.write(f"Invoking script with the following command: {' '.join(argv)}")
        if self.container.network is not None:
            self.logs.write(
                f"Hosts {', '.join(self.container.hosts)} on 127.0.0.1, rendezvous port "
                f"{self.container.network.port} (the container's {CONTAINER_MASTER_PORT})"
            )
        for host in self.hosts:
            name = job.name if host.name == HOST else f"{job.name}/{host.name}"
            environment = host.container.environment()
            host.process = ManagedProcess(argv, host.container.dirs["code"], environment, name)
            host.reader = threading.Thread(
                target=self._read, args=(host,), name=f"read-{job.name}-{host.name}", daemon=True
            )
            host.reader.start()
        self.process = self.hosts[0].process
        self.monitor = ResourceMonitor(
            self.process.pgid,
            job.job_dir / "resource_usage.json",
            self.config.resource_sample_interval_s,
        ).start()
        self._supervise()
        for host in self.hosts:
            self._drain(host)
        self.outputs.usage = self.monitor.stop()
        if self.failed is not None:
            return self.failed.exit_code or 1
        return self.hosts[0].exit_code or 0

    def _read(self, host: HostRun) -> None:
        for line in host.process.lines():
            self._on_line(host, line)

    def _drain(self, host: HostRun) -> None:
        """Wait for a host's output to end; a child left behind would keep it open forever."""
        host.reader.join(STRAGGLER_GRACE_S)
        if host.reader.is_alive():
            logger.warning("%s left processes behind after exiting: killing them", host.name)
            host.process.kill_group()
            host.reader.join(STRAGGLER_GRACE_S)

    def _conclude(self, exit_code: int) -> None:
        job = self.job
        self._mark_tensors_complete()
        if job.stop_event.is_set():
            self.outputs.upload_artifacts(self.logs.write, only_if_model_saved=True)
            job.finish("Stopped", job.stop_reason, job.stop_message)
            return
        if exit_code != 0:
            self.outputs.upload_output_data()
            raise JobFailure(self._failure_reason())
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
        self._stop_hosts()
        if self.monitor is not None:
            self.monitor.stop()
        self.job.finish("Failed", "Failed", STATUS_MESSAGES["Failed"], reason)

    def _on_line(self, host: HostRun, line: str) -> None:
        host.logs.write(line)
        self.job.metrics.feed(line)  # every host's log, as SageMaker reads each instance's
        if line.strip():
            host.tail.append(line.rstrip())
            del host.tail[:-50]

    def _supervise(self) -> None:
        """Until every host exited: stop them all on request or at MaxRuntimeInSeconds; when
        one host fails, stop the others (SageMaker ends the job when one instance fails)."""
        job = self.job
        deadline = time.monotonic() + job.max_runtime_s()
        peer_grace_until: float | None = None
        while True:
            for host in self.hosts:
                if host.exit_code is None and (code := host.process.poll()) is not None:
                    host.exit_code = code
                    if code != 0 and not host.stopped:
                        self._note_failure(host)
                        if peer_grace_until is None:
                            peer_grace_until = time.monotonic() + PEER_FAILURE_GRACE_S
            running = [host for host in self.hosts if host.exit_code is None]
            if not running:
                return
            if self.failed is not None and (
                not lost_peer(self.failed) or time.monotonic() >= (peer_grace_until or 0)
            ):
                self.logs.write(f"Stopping the other hosts: {self.failed.name} failed")
                self._stop_hosts()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                job.request_stop("MaxRuntimeExceeded")
            if job.stop_event.wait(timeout=min(max(remaining, 0.01), 0.1)):
                job.set_secondary_status("Stopping")
                self.logs.write(f"Stopping: {job.stop_message}")
                self._stop_hosts()

    def _note_failure(self, host: HostRun) -> None:
        """The host to blame: the first that failed, unless its own error was losing a peer
        (its collective broke because another host died) and another host failed on its own."""
        if self.failed is None or (lost_peer(self.failed) and not lost_peer(host)):
            self.failed = host

    def _stop_hosts(self) -> None:
        running = [h for h in self.hosts if h.process is not None and h.process.poll() is None]
        for host in running:
            host.stopped = True
        threads = [
            threading.Thread(target=h.process.stop, args=(self.config.stop_grace_s,), daemon=True)
            for h in running
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for host in running:
            host.exit_code = host.process.poll()

    def _failure_reason(self) -> str:
        host = self.failed or self.hosts[0]
        reason = self._algorithm_error(host)
        if len(self.hosts) == 1:
            return reason
        return reason.replace("AlgorithmError: ", f"AlgorithmError: host {host.name} failed: ", 1)

    def _algorithm_error(self, host: HostRun) -> str:
        """AWS's FailureReason for a script that failed, with its last meaningful error line."""
        exit_code = host.exit_code if host.exit_code is not None else 1
        failure_file = host.container.dirs["output"] / "failure"
        written = failure_file.read_text().strip() if failure_file.is_file() else ""
        if self.config.image_python and written and exit_code > 0:
            # The toolkit wrote its own account (ExecuteUserScriptError: ExitCode, ErrorMessage
            # with the script's stderr, Command); SageMaker prefixes it with AlgorithmError.
            return f"AlgorithmError: {written}"
        # A script may explain itself in /opt/ml/output/failure; SageMaker reports that text.
        message = written or next(
            (ln.strip() for ln in reversed(host.tail) if ERROR_LINE.match(ln)), None
        )
        message = message or (host.tail[-1].strip() if host.tail else "(no output)")
        if exit_code < 0:
            message = f"killed by signal {-exit_code}" + (
                " (out of memory?)" if exit_code == -9 else ""
            )
        command = " ".join(host.process.argv) if host.process else ""
        return (
            f"AlgorithmError: ExecuteUserScriptError:\nExitCode {exit_code}\n"
            f'ErrorMessage "{message}"\nCommand "{command}", exit code: {exit_code}'
        )


def distributed_launch(job: TrainingJob) -> bool:
    """Whether the job asks the container for torchrun (the SDK's torch_distributed)."""
    return str(job.hyperparameters.get(TORCH_DISTRIBUTED_HYPERPARAMETER, "")).lower() == "true"


def lost_peer(host: HostRun) -> bool:
    """Whether a host's last lines say its collective broke because a peer went away."""
    return any(PEER_LOST.search(line) for line in host.tail[-30:])
