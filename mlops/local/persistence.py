"""State that lasts: the local cloud's snapshots on disk under <root>/state/.

Each service keeps its state in memory (moto's backends, the local SageMaker's records), as
before. A `Persister` thread writes a snapshot of each source that changed, at most every
`interval_s` seconds, and once more when the cloud stops; `LocalCloud` restores them when it
starts. Every file is written crash-safe with `paths.write_private`: a partial file in the same
folder, one fsync of its data, then `os.replace` (atomic on POSIX), so after `kill -9` or a
power cut at any moment each file is either the previous complete snapshot or the new complete
one. The folders are fsynced where an order matters (S3 bodies before the snapshot that names
them, a snapshot before the bodies it dropped are removed) and once when the cloud stops. A header
with a BLAKE2b checksum of the payload catches a file damaged some other way; such a file is never
loaded silently (the cloud refuses to start and says which file, so no data is overwritten).

Why snapshots rather than a journal of requests (moto's recorder) or moto's own state: see
docs/local-cloud.md ("State that lasts").
"""

from __future__ import annotations

import contextlib
import copyreg
import hashlib
import io
import logging
import os
import pickle
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.local.paths import PARTIAL_SUFFIX, write_private

log = logging.getLogger(__name__)

MAGIC = b"MLOPS-STATE-1\n"
STATE_DIR = "state"
# `MLOPS_LOCAL_PERSISTENCE=off` runs a cloud that starts empty and writes nothing (bench/).
PERSISTENCE_ENV = "MLOPS_LOCAL_PERSISTENCE"
DEFAULT_INTERVAL_S = 1.0


class StateError(RuntimeError):
    """A state file that cannot be read back; the message names the file and the fix."""


def persistence_enabled() -> bool:
    return os.environ.get(PERSISTENCE_ENV, "on").strip().lower() not in {"off", "0", "false", "no"}


def state_dir(root: Path) -> Path:
    return root / STATE_DIR


# -- crash-safe files ------------------------------------------------------------------------------
def fsync_dir(directory: Path) -> None:
    """Make the renames and removals in a folder durable (a reboot right after sees them)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_leftover_temp_files(directory: Path) -> int:
    """Partial files of writes a crash interrupted; they were never the live file.
    (``.tmp``: the name such files had before write_private wrote the snapshots.)"""
    count = 0
    if directory.is_dir():
        for pattern in (f".*{PARTIAL_SUFFIX}", ".*.tmp"):
            for leftover in directory.rglob(pattern):
                with contextlib.suppress(OSError):
                    leftover.unlink()
                    count += 1
    return count


def encode_snapshot(
    payload: Any, reducers: dict[type, Callable[[Any], Any]] | None = None
) -> bytes:
    """Header + checksum + pickle; `reducers` pickle given types differently (see moto_state)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    if reducers:
        pickler.dispatch_table = {**copyreg.dispatch_table, **reducers}
    pickler.dump(payload)
    body = buffer.getvalue()
    return MAGIC + _digest(body) + b"\n" + body


def _digest(body: bytes) -> bytes:
    """BLAKE2b: a cryptographic checksum at about twice SHA-256's speed on 64-bit CPUs."""
    return hashlib.blake2b(body, digest_size=32).hexdigest().encode()


def _header_digest(data: bytes) -> bytes:
    return data[len(MAGIC) : len(MAGIC) + 64]


def decode_snapshot(data: bytes, path: Path) -> Any:
    """The payload of a snapshot file; StateError (naming the file) when it is damaged."""
    if not data.startswith(MAGIC):
        raise StateError(f"{path} is not a local cloud state file: {_fix(path)}")
    digest, _, body = data[len(MAGIC) :].partition(b"\n")
    if _digest(body) != digest:
        raise StateError(f"{path} is damaged (its checksum does not match): {_fix(path)}")
    try:
        return pickle.loads(body)
    except Exception as exc:  # a moto upgrade can rename a pickled class
        raise StateError(
            f"{path} cannot be read back ({type(exc).__name__}: {exc}), e.g. after a moto "
            f"upgrade: {_fix(path)}"
        ) from exc


def _fix(path: Path) -> str:
    return (
        f"move it away to start that service empty, or run `mlops reset` to start the whole "
        f"local cloud empty (the state folder is {path.parent})"
    )


class SnapshotFile:
    """One service's snapshot: written whole and atomically, read back whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last_digest: bytes | None = None

    def write(self, payload: Any) -> bool:
        """Write unless the content equals the last write; True when the file changed."""
        return self.write_encoded(encode_snapshot(payload))

    def write_encoded(self, data: bytes) -> bool:
        digest = _header_digest(data)  # the payload's checksum, computed once by encode
        if digest == self._last_digest:
            return False
        write_private(self.path, data, sync=True)
        self._last_digest = digest
        return True

    def read(self) -> Any | None:
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        payload = decode_snapshot(data, self.path)
        self._last_digest = _header_digest(data)
        return payload


# -- the writer thread -----------------------------------------------------------------------------
@dataclass
class Source:
    """Something to snapshot: `due()` says whether it may have changed since the last write."""

    name: str
    file: SnapshotFile
    snapshot: Callable[[], Any]
    due: Callable[[], bool] = lambda: True
    reducers: dict[type, Callable[[Any], Any]] | None = None
    # Runs between encoding and writing (S3: make the new bodies' names durable first).
    before_write: Callable[[], None] | None = None
    # Runs once the new snapshot is on disk (S3: remove the bodies it no longer names).
    after_write: Callable[[], None] | None = None
    writes: int = 0
    seconds: float = 0.0  # wall time of snapshots (encode, fsync, write), waits included
    cpu_seconds: float = 0.0  # CPU time of the writer thread on them (time.thread_time)
    next_at: float = 0.0  # monotonic time before which the writer thread leaves it alone


@dataclass
class Persister:
    """Writes every due source each `interval_s` in a daemon thread, and all of them on `flush`."""

    interval_s: float = DEFAULT_INTERVAL_S
    sources: list[Source] = field(default_factory=list)
    # A snapshot that took c CPU seconds waits c * spacing (at most max_delay_s) before the
    # next one, so the thread uses at most 1 / spacing of a core (5%) while the state is small
    # enough to snapshot in max_delay_s / spacing. CPU time, not wall time: on a loaded machine
    # waiting for a core or the GIL must not push the next snapshot minutes away.
    spacing: float = 20.0
    max_delay_s: float = 10.0
    # A milestone (the local cloud: an execution started or ended) saves every source at the
    # next tick, whatever its spacing: milestones are rare and are what a user must not lose.
    milestone: Callable[[], bool] = lambda: False

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, source: Source) -> None:
        self.sources.append(source)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="state-persister", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.save(only_due=True)

    def save(self, only_due: bool = False) -> None:
        with self._lock:
            every_source = not only_due or self.milestone()
            for source in self.sources:
                if not every_source and (time.monotonic() < source.next_at or not source.due()):
                    continue
                self._save_one(source)

    def _save_one(self, source: Source) -> None:
        started = time.perf_counter()
        cpu_started = time.thread_time()
        try:
            data = snapshot_with_retries(source.snapshot, source.reducers)
            if source.before_write is not None:
                source.before_write()
            if source.file.write_encoded(data):
                source.writes += 1
            if source.after_write is not None:
                source.after_write()
        except Exception:
            log.exception("could not write the %s snapshot (kept the previous one)", source.name)
        source.seconds += time.perf_counter() - started
        cpu = time.thread_time() - cpu_started
        source.cpu_seconds += cpu
        source.next_at = time.monotonic() + min(cpu * self.spacing, self.max_delay_s)

    def stop(self) -> None:
        """Stop the thread and write every source a last time (a clean `mlops down`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.save()
        for folder in sorted({source.file.path.parent for source in self.sources}):
            fsync_dir(folder)  # the last snapshots' renames, durable before the cloud is down
        for source in self.sources:
            log.info(
                "state %s: %d writes, %.2f s spent, %.2f s CPU",
                source.name,
                source.writes,
                source.seconds,
                source.cpu_seconds,
            )


def snapshot_with_retries(
    snapshot: Callable[[], Any],
    reducers: dict[type, Callable[[Any], Any]] | None = None,
    attempts: int = 5,
) -> bytes:
    """Take and encode a snapshot while request threads keep changing the state.

    Pickling a dict another thread grows raises RuntimeError; the next attempt usually wins.
    """
    for attempt in range(attempts):
        try:
            return encode_snapshot(snapshot(), reducers)
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


# -- the API key -----------------------------------------------------------------------------------
def load_or_create_api_key(root: Path) -> str:
    """The local API's key: the same across restarts (clients keep working), 0600 on disk."""
    path = state_dir(root) / "api_key"
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
    key = secrets.token_urlsafe(24)
    write_private(path, key, sync=True)
    return key


__all__ = [
    "PERSISTENCE_ENV",
    "Persister",
    "SnapshotFile",
    "Source",
    "StateError",
    "decode_snapshot",
    "encode_snapshot",
    "fsync_dir",
    "load_or_create_api_key",
    "persistence_enabled",
    "remove_leftover_temp_files",
    "state_dir",
]
