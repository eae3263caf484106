"""System profile of a training job, sampled by the job itself (no SageMaker Profiler needed).

SageMaker Debugger's Profiler (closed to new accounts since 2026-07-30, end of support
2027-06-30) writes CPU/GPU/memory samples under ``<ProfilerConfig.S3OutputPath>/<job>/
profiler-output/system/``. Without it a job has no system profile, so train.py samples the
machine itself with psutil (GPUs through NVML when torch can reach it) and writes the samples
in the Profiler's own JSON-lines format to ``SM_OUTPUT_DATA_DIR/profiler/system-metrics.json``;
SageMaker uploads that folder as ``output.tar.gz`` and the report reads it from there:

    {"Type": "cpu", "Name": "cpu0", "Dimension": "CPUUtilization", "Value": 12.5,
     "Timestamp": 1733140000.0}

One line per core (cpuN), one for memory (MemoryUsedPercent) and, per GPU, gpuN
GPUUtilization and GPUMemoryUtilization.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil

METRICS_FILE = "system-metrics.json"
FOLDER = "profiler"
DEFAULT_INTERVAL_S = 1.0


def gpu_samples() -> list[tuple[int, float, float]]:
    """(index, utilization %, memory used %) per GPU; [] without a GPU or without NVML."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        samples = []
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            utilization = float(torch.cuda.utilization(index))  # needs NVML (pynvml)
            samples.append((index, utilization, 100.0 * (total - free) / max(total, 1)))
        return samples
    except Exception:  # a missing NVML (pynvml) must never fail the training job
        return []


def sample_lines(stamp: float) -> list[dict[str, Any]]:
    """One sampling moment in the Profiler's system-metrics format."""
    lines: list[dict[str, Any]] = []
    for core, percent in enumerate(psutil.cpu_percent(percpu=True)):
        lines.append(line("cpu", f"cpu{core}", "CPUUtilization", percent, stamp))
    memory = psutil.virtual_memory().percent
    lines.append(line("memory", "memory", "MemoryUsedPercent", memory, stamp))
    for index, utilization, memory_used in gpu_samples():
        lines.append(line("gpu", f"gpu{index}", "GPUUtilization", utilization, stamp))
        lines.append(line("gpu", f"gpu{index}", "GPUMemoryUtilization", memory_used, stamp))
    return lines


def line(kind: str, name: str, dimension: str, value: float, stamp: float) -> dict[str, Any]:
    return {
        "Type": kind,
        "Name": name,
        "Dimension": dimension,
        "Value": round(float(value), 2),
        "Timestamp": round(stamp, 3),
    }


class SystemProfiler:
    """A daemon thread appending one sample per interval to the metrics file.

    Lines are appended and flushed as they are taken, so a job that is stopped or killed
    still leaves the profile up to that moment in its output.
    """

    def __init__(self, out_dir: Path, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.path = out_dir / FOLDER / METRICS_FILE
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-profiler", daemon=True)
        self.samples = 0

    def start(self) -> SystemProfiler:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        psutil.cpu_percent(percpu=True)  # the first call only sets psutil's reference point
        self._thread.start()
        return self

    def stop(self) -> int:
        """Take a last sample, stop, and return how many sampling moments were written."""
        self._stop.set()
        self._thread.join(self.interval_s + 5)
        return self.samples

    def _run(self) -> None:
        with self.path.open("a") as out:
            while True:
                stopping = self._stop.wait(self.interval_s)
                for item in sample_lines(time.time()):
                    out.write(json.dumps(item) + "\n")
                out.flush()
                self.samples += 1
                if stopping:
                    return
