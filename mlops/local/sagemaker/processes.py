"""Child processes of the local SageMaker: started in their own process group, never orphaned.

Training scripts start data-loader workers and model servers may fork; killing only the direct
child would leave those running. Every process is therefore a session leader and is stopped by
signalling its whole group, and a module-level registry kills whatever is still alive when the
interpreter exits (atexit), so a crashed test run leaves nothing behind. They are started with
`mlops.local.process.spawn`, so they also die with the local cloud when it is killed (-9).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops.local.process import forget_group, spawn

logger = logging.getLogger(__name__)

_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a cpuset, `taskset`, a test
    worker's pin), which os.cpu_count() ignores. Jobs sized by os.cpu_count() beside other
    work oversubscribe the cores, and spinning OpenMP threads then cost far more than a fair
    share: two 2-thread trainings on 2 cores each ran 3x slower than alone."""
    return len(os.sched_getaffinity(0)) or 1


class ManagedProcess:
    """A subprocess with merged stdout/stderr read line by line, stoppable as a group."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], name: str) -> None:
        self.name = name
        self.argv = argv
        self.popen = spawn(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self.pgid = self.popen.pid  # session leader: its pid is the group id
        with _LIVE_LOCK:
            _LIVE.add(self)
        logger.info("started %s (pid %d): %s", name, self.popen.pid, " ".join(argv))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def lines(self) -> Iterator[str]:
        """Output lines as they are printed (ends when the process and its children close
        their output). Only this reader closes the pipe, so a stop from another thread never
        pulls the stream from under it."""
        stream = self.popen.stdout
        assert stream is not None
        try:
            yield from stream
        finally:
            stream.close()

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        code = self.popen.wait(timeout)
        self._reap_group()
        return code

    def kill_group(self) -> None:
        """SIGKILL every process of the group (the leader and whatever it started)."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signum)

    def _reap_group(self) -> None:
        """After the leader exits, kill stragglers of its group and forget the process."""
        self._signal_group(signal.SIGKILL)
        forget_group(self.pgid)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def stop(self, grace_s: float) -> int:
        """SIGTERM the group, SIGKILL it after ``grace_s`` (SageMaker's stop, shortened)."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.0f s: killing it", self.name, grace_s)
                self._signal_group(signal.SIGKILL)
        code = self.popen.wait()
        self._reap_group()
        return code


def kill_all_processes() -> None:
    """Kill every process group the service started and that is still registered."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for process in live:
        process._signal_group(signal.SIGKILL)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            process.popen.wait(5)
        with _LIVE_LOCK:
            _LIVE.discard(process)


def live_process_count() -> int:
    """How many started processes are still registered (tests assert 0 after shutdown)."""
    with _LIVE_LOCK:
        return sum(1 for process in _LIVE if process.popen.poll() is None)


atexit.register(kill_all_processes)


# --- resource usage ---------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _group_usage(pgid: int) -> tuple[float, int, int]:
    """(CPU seconds, RSS bytes, process count) summed over a process group, from /proc."""
    cpu_seconds, rss_bytes, count = 0.0, 0, 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if int(fields[2]) != pgid:
            continue
        cpu_seconds += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        rss_bytes += int(fields[21]) * _PAGE_SIZE
        count += 1
    return cpu_seconds, rss_bytes, count


class ResourceMonitor:
    """Samples CPU % and RSS of a process group into a JSON file (read by reports/benchmarks).

    psutil is not part of the environment, so /proc is read directly (Linux only); on another
    system the monitor records nothing rather than failing the job.
    """

    def __init__(self, pgid: int, output: Path, interval_s: float) -> None:
        self.pgid = pgid
        self.output = output
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self.started_epoch_s = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"usage-{pgid}", daemon=True)

    def start(self) -> ResourceMonitor:
        if Path("/proc/self/stat").exists():
            self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        last_cpu, last_time = 0.0, started
        while not self._stop.is_set():
            cpu, rss, count = _group_usage(self.pgid)
            now = time.monotonic()
            if count:
                elapsed = max(now - last_time, 1e-6)
                self.samples.append(
                    {
                        "t": round(now - started, 3),
                        "cpu_percent": round(max(cpu - last_cpu, 0.0) / elapsed * 100, 1),
                        "rss_bytes": rss,
                        "processes": count,
                    }
                )
                last_cpu, last_time = cpu, now
            self._stop.wait(self.interval_s)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        summary = {
            "interval_s": self.interval_s,
            "started_epoch_s": round(self.started_epoch_s, 3),
            "cpu_count": usable_cores(),
            "peak_rss_bytes": max((s["rss_bytes"] for s in self.samples), default=0),
            "mean_cpu_percent": round(
                sum(s["cpu_percent"] for s in self.samples[1:]) / max(len(self.samples) - 1, 1), 1
            ),
            "samples": self.samples,
        }
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.output.write_text(json.dumps(summary, indent=1))
        return summary


def profiler_system_metrics(usage: dict[str, Any], total_memory_bytes: int) -> str:
    """resource_usage.json as SageMaker Profiler system metrics (JSON lines), so reports read
    a local job's profile the way they read an AWS one: CPU % averaged over the cores, memory
    as % of the machine's."""
    started = float(usage.get("started_epoch_s", 0.0))
    cores = max(int(usage.get("cpu_count") or 1), 1)
    lines = []
    for sample in usage.get("samples", []):
        stamp = round(started + float(sample["t"]), 3)
        lines.append(
            {
                "Name": "cpu",
                "Type": "cpu",
                "Dimension": "CPUUtilization",
                "Value": round(float(sample["cpu_percent"]) / cores, 2),
                "Timestamp": stamp,
            }
        )
        lines.append(
            {
                "Name": "memory",
                "Type": "memory",
                "Dimension": "MemoryUsedPercent",
                "Value": round(100.0 * sample["rss_bytes"] / max(total_memory_bytes, 1), 2),
                "Timestamp": stamp,
            }
        )
    return "".join(json.dumps(line) + "\n" for line in lines)


def total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
