"""What every benchmark shares: settings, goals and results, statistics, child processes.

Child processes are measured from the outside, so the code under test runs exactly as it does
in production: `run_child` stamps every output line with the wall time and the child's own CPU
time (read from /proc when the line arrives) and reaps the child with `os.wait4` (its rusage is
that one child's). Peak RSS is the child's VmHWM read from /proc while it runs (every 50 ms;
the high-water mark never goes down, so the last reading is the peak of the work). ru_maxrss
is kept too, but it is not used as "the peak": the CUDA build of torch touches about 130 MB
more while the interpreter shuts down, after the work is done. Every process started here is
stopped in a `finally`, by its process group.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING_DIR = REPO_ROOT / "training"
FUNCTIONS_DIR = REPO_ROOT / "functions"
LAYER_DIR = FUNCTIONS_DIR / "shared" / "python"
MODEL_SERVER = REPO_ROOT / "mlops" / "local" / "model_server.py"
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# One intra-op thread: on a shared machine a second OpenMP thread mostly spins waiting for a
# core, which inflates CPU time and wall time alike; with one thread CPU time measures work.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class Settings:
    """How big to make each benchmark (`quick`: minimal sizes) and where to put scratch files."""

    quick: bool
    work_dir: Path

    def scratch(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def log(message: str) -> None:
    """Progress on stderr, so a long run shows where it is without mixing into the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Goals and results
# ---------------------------------------------------------------------------------------------


def at_least(metric: str, value: float | None, threshold: float) -> dict[str, Any]:
    """A goal met when `value >= threshold` (a missing value fails)."""
    passed = value is not None and math.isfinite(value) and value >= threshold
    return {"metric": metric, "value": value, "goal": f">= {threshold:g}", "passed": passed}


def at_most(metric: str, value: float | None, threshold: float) -> dict[str, Any]:
    """A goal met when `value <= threshold` (a missing value fails)."""
    passed = value is not None and math.isfinite(value) and value <= threshold
    return {"metric": metric, "value": value, "goal": f"<= {threshold:g}", "passed": passed}


def info(metric: str, value: float | str | None, goal: str = "report") -> dict[str, Any]:
    """A figure shown in the table without a pass/fail (the issue sets no number for it)."""
    return {"metric": metric, "value": value, "goal": goal, "passed": None}


def result(
    name: str,
    title: str,
    checks: list[dict[str, Any]],
    measurements: dict[str, Any],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The dict every benchmark returns; status is fail if any goal failed, else pass/info."""
    verdicts = [c["passed"] for c in checks if c["passed"] is not None]
    status = "fail" if False in verdicts else ("pass" if verdicts else "info")
    return {
        "name": name,
        "title": title,
        "status": status,
        "checks": checks,
        "measurements": measurements,
        "notes": list(notes),
    }


def skipped(name: str, title: str, reason: str, measurements: dict | None = None) -> dict:
    """An honest "could not measure": the reason is printed instead of numbers."""
    return {
        "name": name,
        "title": title,
        "status": "skipped",
        "reason": reason,
        "checks": [],
        "measurements": measurements or {},
        "notes": [],
    }


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def rounded(value: Any, digits: int = 4) -> Any:
    """Round floats inside nested dicts/lists for results.json (raw noise digits help no one)."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    """A measured process exited non-zero or ran too long; the message has its last lines."""


def process_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a live process (all its threads), from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM of a live process: the kernel's own peak resident set size."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


@dataclass
class Line:
    """One output line of a child: seconds since start, the child's CPU seconds then, text."""

    wall_s: float
    cpu_s: float | None
    text: str


@dataclass
class ChildRun:
    command: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int  # VmHWM while running (see the module docstring)
    exit_max_rss_bytes: int  # ru_maxrss, interpreter shutdown included
    log_path: Path
    lines: list[Line] = field(default_factory=list)

    def matching(self, pattern: str) -> list[Line]:
        regex = re.compile(pattern)
        return [line for line in self.lines if regex.search(line.text)]

    def first(self, pattern: str) -> Line | None:
        found = self.matching(pattern)
        return found[0] if found else None

    def tail(self, count: int = 15) -> str:
        return "\n".join(line.text for line in self.lines[-count:])


def kill_group(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left; reap the child."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
        process.wait(timeout=10)


def _read_lines(
    process: subprocess.Popen, started: float, lines: list[Line], log_path: Path
) -> None:
    with log_path.open("w") as log_file:
        for text in process.stdout:
            cpu_s = process_cpu_seconds(process.pid)
            lines.append(Line(time.perf_counter() - started, cpu_s, text.rstrip("\n")))
            log_file.write(text)


def run_child(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    timeout_s: float,
) -> ChildRun:
    """Run a command to completion, time-stamping its output; raise ChildFailed on failure."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: list[Line] = []
    reader = threading.Thread(target=_read_lines, args=(process, started, lines, log_path))
    reader.start()
    try:
        status, usage, peak = _wait_with_rusage(process, started + timeout_s)
    finally:
        kill_group(process, grace_s=0.5)
        reader.join(timeout=10)
        process.stdout.close()
    run = ChildRun(
        command=command,
        returncode=os.waitstatus_to_exitcode(status) if status is not None else -9,
        wall_s=time.perf_counter() - started,
        cpu_s=(usage.ru_utime + usage.ru_stime) if usage else math.nan,
        peak_rss_bytes=peak,
        exit_max_rss_bytes=usage.ru_maxrss * 1024 if usage else 0,
        log_path=log_path,
        lines=lines,
    )
    if status is None:
        raise ChildFailed(f"{Path(command[1]).name} ran over {timeout_s:.0f} s:\n{run.tail()}")
    if run.returncode != 0:
        raise ChildFailed(
            f"{' '.join(command[:2])} exited with {run.returncode} (log {log_path}):\n{run.tail()}"
        )
    return run


def _wait_with_rusage(process: subprocess.Popen, deadline: float) -> tuple[int | None, Any, int]:
    """Poll os.wait4 until the child ends or the deadline passes, reading its VmHWM meanwhile.

    Returns (wait status or None on timeout, rusage or None, peak RSS bytes). wait4 returns
    the rusage of this one child; Popen is told the exit code so it never reaps the pid again.
    """
    peak = 0
    while time.perf_counter() < deadline:
        peak = max(peak, peak_rss_bytes(process.pid) or 0)
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return status, usage, peak
        time.sleep(0.05)
    return None, None, peak


@contextlib.contextmanager
def served(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    port_file: Path,
    log_path: Path,
    timeout_s: float = 120,
) -> Iterator[tuple[subprocess.Popen, int]]:
    """Start a server that writes its port to `port_file` once ready; always stop it."""
    port_file.unlink(missing_ok=True)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log_path.read_text().splitlines()[-15:])
                raise ChildFailed(f"{Path(command[1]).name} did not start:\n{tail}")
            time.sleep(0.05)
        yield process, int(port_file.read_text())
    finally:
        kill_group(process)


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would redirect the code under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMDEBUG_", "SM_"))}
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------
# Data and training runs
# ---------------------------------------------------------------------------------------------


def digits(settings: Settings, per_class: int, size: int) -> Path:
    """scikit-learn's digits as PNGs in the train|valid|test/NNN.label layout (cached per run)."""
    from mlops.sample_data import write_digits

    root = settings.work_dir / "data" / f"digits-{per_class}x{size}"
    if not (root / "test").is_dir():
        write_digits(root, max_per_class=per_class, size=size, seed=0, overwrite=True)
    return root


def split_sizes(data: Path) -> dict[str, int]:
    return {split: sum(1 for p in (data / split).rglob("*.png")) for split in ("train", "valid")}


def train_command(**arguments: Any) -> list[str]:
    """`python train.py --name value ...`, as SageMaker passes hyperparameters."""
    command = [PYTHON, str(TRAINING_DIR / "train.py")]
    for name, value in arguments.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    return command


def training_env(data: Path, job_dir: Path, **extra: str) -> dict[str, str]:
    """The SageMaker training contract's SM_* variables for a job folder."""
    (job_dir / "model").mkdir(parents=True, exist_ok=True)
    (job_dir / "output").mkdir(parents=True, exist_ok=True)
    return base_env(
        SM_CHANNEL_TRAIN=str(data / "train"),
        SM_CHANNEL_VALID=str(data / "valid"),
        SM_CHANNEL_TEST=str(data / "test"),
        SM_MODEL_DIR=str(job_dir / "model"),
        SM_OUTPUT_DATA_DIR=str(job_dir / "output"),
        **extra,
    )


def run_training(
    data: Path,
    job_dir: Path,
    arguments: dict[str, Any],
    timeout_s: float,
    **extra_env: str,
) -> ChildRun:
    """Run train.py as SageMaker would (from inside training/), output logged in the job dir."""
    return run_child(
        train_command(**arguments),
        env=training_env(data, job_dir, **extra_env),
        cwd=TRAINING_DIR,
        log_path=job_dir / "train.log",
        timeout_s=timeout_s,
    )


def trained_model(
    settings: Settings, image_size: int, model: str = "resnet18", per_class: int = 5
) -> Path:
    """A model folder as train.py writes it (1 tiny epoch), reused within a run.

    Serving costs do not depend on how well the model learned, only on its shape.
    """
    job_dir = settings.work_dir / "models" / f"{model}-{image_size}"
    if not (job_dir / "model" / "model.pth").is_file():
        data = digits(settings, per_class, image_size)
        arguments = {
            "model": model,
            "epochs": 1,
            "batch_size": 16,
            "image_size": image_size,
            "hflip": "false",
            "workers": 0,
        }
        run_training(data, job_dir, arguments, timeout_s=600)
    return job_dir / "model"
