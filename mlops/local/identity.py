"""Who a PID is: a process id plus the kernel's start time, so a reused PID is never mistaken
for the process that had it (the cloud's lock, `mlops down`, the reaper)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ProcessIdentity:
    """A PID plus the kernel's start time of that process: together they name one process."""

    pid: int
    started: float

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        return cls(pid, psutil.Process(pid).create_time())

    def alive(self) -> bool:
        """Whether this very process (not another one that reused the PID) still runs."""
        try:
            process = psutil.Process(self.pid)
            same = abs(process.create_time() - self.started) < 0.01
            return same and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
