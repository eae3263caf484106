"""Jobs are sized from the cores the cloud may use (its CPU affinity), not the machine's count."""

from __future__ import annotations

import os
import subprocess
import sys

from mlops.local.sagemaker.processes import usable_cores

PRINT_CORES = "from mlops.local.sagemaker.processes import usable_cores; print(usable_cores())"


def test_usable_cores_follow_the_cpu_affinity_not_the_machines_count() -> None:
    """A process pinned to one core (a cpuset, `taskset`, a test worker) sizes its jobs for one,
    whatever os.cpu_count() says (2 here)."""
    first = min(os.sched_getaffinity(0))
    pinned = subprocess.run(
        [sys.executable, "-c", PRINT_CORES],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {first}),
    )
    assert pinned.stdout.strip() == "1"
    assert usable_cores() == len(os.sched_getaffinity(0))
