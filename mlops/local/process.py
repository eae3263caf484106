"""Processes the local cloud owns: starting them so that none outlives the cloud, and the cloud
itself as a background process (CLI, tests, benchmarks).

Every process the cloud starts (Lambda workers, training jobs, model servers, rule runs, tuning
trials) goes through `spawn`, which

- makes it the leader of a new session and process group, so stopping it stops whatever it
  started too (DataLoader workers, the training toolkit's child);
- gives it a parent-death signal (Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)`), so it dies with
  the cloud even after `kill -9`. The signal follows the *thread* that forked, so every fork
  happens on one spawner thread that lives as long as the process;
- registers its group with a reaper, a small process of its own (`python -m
  mlops.local.process --reap`) that waits for the cloud's end on a pipe and then SIGKILLs every
  registered group still alive: grandchildren do not get the parent-death signal, the reaper
  catches them.

`ProcessIdentity` (PID plus the kernel's start time) is how the CLI proves that a PID in
cloud.json is still the cloud it started before it signals it: PIDs are reused.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil

from mlops.local.cloud_info import CloudInfo
from mlops.local.identity import ProcessIdentity

log = logging.getLogger(__name__)

START_TIMEOUT_S = 180
LOCK_FILE = "cloud.lock"
PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


class CloudStartError(RuntimeError):
    pass


class CloudLockedError(CloudStartError):
    """Another local cloud holds this state folder."""


# --- one cloud per state folder ------------------------------------------------------------------
def acquire_cloud_lock(root: Path) -> int:
    """Take <root>/cloud.lock for the life of this process (the kernel drops it at exit, also
    after kill -9); raise CloudLockedError naming the holder when another cloud has it."""
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        pid = holder.get("pid", "unknown")
        raise CloudLockedError(
            f"another local cloud (pid {pid}) already runs in {root} (it holds {path}): "
            f"`mlops down --root {root}` stops it, or pick another --root"
        ) from None
    os.fchmod(fd, 0o600)
    me = ProcessIdentity.of(os.getpid())
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": me.pid, "started": me.started}).encode())
    return fd


def lock_holder(root: Path) -> dict[str, Any] | None:
    """The cloud holding <root>/cloud.lock ({"pid", "started"}), or None when no cloud holds it."""
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {"pid": None, "started": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        return json.loads(os.read(fd, 4096) or b"{}")
    except ValueError:
        return {}


# --- spawning children that die with the cloud ---------------------------------------------------
def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL this child when its parent dies; exit if the parent already has."""
    prctl = _PRCTL

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, _SIGKILL)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


class _Spawner:
    """Runs every fork on one long-lived thread: PR_SET_PDEATHSIG fires when the *thread* that
    forked ends, and a Lambda worker forked on a short-lived request thread would die with it."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return fn()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="spawner", daemon=True)
                self._thread.start()
        future: Future = Future()
        self._requests.put((fn, future))
        return future.result()

    def _serve(self) -> None:
        while True:
            fn, future = self._requests.get()
            try:
                future.set_result(fn())
            except BaseException as error:  # handed to the caller
                future.set_exception(error)


class _Reaper:
    """The client side of the reaper process: tells it which process groups to kill at the end."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mlops.local.process", "--reap", "--owner", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a killpg of the cloud's group must not take it along
            text=True,
        )

    def _send(self, line: str) -> None:
        with self._lock:
            try:
                self._ensure_started()
                assert self._process is not None and self._process.stdin is not None
                self._process.stdin.write(line + "\n")
                self._process.stdin.flush()
            except (OSError, ValueError) as error:
                log.warning("the process reaper is not reachable (%s): %s", error, line)

    def register(self, identity: ProcessIdentity) -> None:
        self._send(f"+{identity.pid} {identity.started!r}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None


_SPAWNER = _Spawner()
_REAPER = _Reaper()


def spawn(argv: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen` for every process the local cloud starts (see the module docstring):
    a new session and process group, a parent-death signal, registered with the reaper."""
    popen_kwargs["start_new_session"] = True
    popen_kwargs["preexec_fn"] = _die_with_parent(os.getpid())

    def start() -> subprocess.Popen:
        process = subprocess.Popen(argv, **popen_kwargs)
        with contextlib.suppress(psutil.Error):
            _REAPER.register(ProcessIdentity.of(process.pid))
        return process

    return _SPAWNER.run(start)


def forget_group(pgid: int) -> None:
    """A group `spawn` started has been stopped and reaped: the reaper need not watch it."""
    _REAPER.forget(pgid)


def reaper_pid() -> int | None:
    return _REAPER.pid


def kill_groups(groups: dict[int, float], rounds: int = 5) -> int:
    """SIGKILL every process in the given groups that started no earlier than its group's
    leader (so a PID reused after the group ended is left alone); returns how many."""
    killed = 0
    for _ in range(rounds):
        found = 0
        for process in psutil.process_iter(["pid", "create_time"]):
            with contextlib.suppress(psutil.Error, OSError):
                started = groups.get(os.getpgid(process.pid))
                if started is None or process.info["create_time"] < started - 0.01:
                    continue
                if process.pid == os.getpid():
                    continue
                process.kill()
                found += 1
        killed += found
        if not found:
            break
        time.sleep(0.05)
    return killed


def run_reaper(owner: int) -> None:
    """Read `+pgid started` / `-pgid` lines until the owner's end closes stdin, then kill."""
    groups: dict[int, float] = {}
    for line in sys.stdin:
        line = line.strip()
        with contextlib.suppress(ValueError):
            if line.startswith("+"):
                pgid, started = line[1:].split()
                groups[int(pgid)] = float(started)
            elif line.startswith("-"):
                groups.pop(int(line[1:]), None)
    killed = kill_groups(groups)
    if killed:
        print(f"reaper: process {owner} ended; killed {killed} leftover processes", file=sys.stderr)


# --- the cloud as a background process -----------------------------------------------------------
def start_cloud_process(
    root: Path,
    template: Path | None = None,
    parameters: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
    exit_with_caller: bool = True,
) -> tuple[subprocess.Popen, CloudInfo]:
    """Start `python -m mlops.local.server` in its own process group; return once it is READY.

    With `exit_with_caller` (tests, the demo) the cloud stops by itself when this process ends,
    even if it is killed before it can stop the cloud; `mlops up` turns that off.
    """
    root.mkdir(parents=True, exist_ok=True)
    holder = lock_holder(root)
    if holder is not None:  # the server checks again under the lock; this only answers sooner
        raise CloudLockedError(
            f"another local cloud (pid {holder.get('pid')}) already runs in {root} "
            f"(it holds {root / LOCK_FILE}): `mlops down --root {root}` stops it, "
            "or pick another --root"
        )
    command = [sys.executable, "-m", "mlops.local.server", "--root", str(root)]
    if template is not None:
        command += ["--template", str(template)]
    for key, value in (parameters or {}).items():
        command += ["--parameter", f"{key}={value}"]
    if exit_with_caller:
        command += ["--exit-with-pid", str(os.getpid())]
    with (root / "server.out").open("w") as errors:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
            env={**os.environ, **(extra_env or {})},
        )
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("READY "):
        stop_cloud_process(process)
        if line.startswith("LOCKED "):
            raise CloudLockedError(line[len("LOCKED ") :].strip())
        raise CloudStartError(
            f"The local cloud did not start: {line.strip() or f'no answer in {timeout_s:.0f} s'}; "
            f"see {root / 'cloud.log'} and {root / 'server.out'}"
        )
    return process, CloudInfo(**json.loads(line[len("READY ") :]))


def stop_cloud_process(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM (the server stops its jobs, servers and workers), then kill the group if needed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    _kill_group(process.pid)
    if process.poll() is None:
        process.wait(timeout=10)
    if process.stdout:
        process.stdout.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description="the local cloud's process reaper")
    parser.add_argument("--reap", action="store_true", required=True)
    parser.add_argument("--owner", type=int, required=True, help="the process being watched")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is for the owner
    run_reaper(args.owner)


if __name__ == "__main__":
    main()
