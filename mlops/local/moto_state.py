"""Snapshots of the moto backends that hold data: S3, CloudWatch Logs, Step Functions.

- S3: the buckets as moto holds them (`FakeBucket`, every key version, delete markers,
  versioning, notification and policy settings). moto makes its keys picklable itself
  (`FakeKey.__getstate__` reads the value out of its spooled file), so a bucket round-trips
  through pickle with its versions and metadata.
- CloudWatch Logs: the log groups with their streams and events.
- Step Functions: each execution as plain data (name, status, input, output, error, cause,
  dates and the event history as GetExecutionHistory returns it). A live execution holds worker
  threads and cannot be pickled; a restored one is a `RestoredExecution` that answers
  Describe/List/GetExecutionHistory from that record. One that was RUNNING when the snapshot
  was taken comes back ABORTED with error `LocalCloud.Stopped` and a cause saying so (its
  Lambdas and SageMaker jobs ran in processes that are gone; resuming it midway is not safe).

Everything else (functions, roles, topics, the state machine itself) is deployed from
template.yaml at every start, so an edited template or handler takes effect on `mlops up`.
"""

from __future__ import annotations

import contextlib
import copyreg
import datetime as dt
import hashlib
import io
import json
import logging
import pickle
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from moto.core.utils import iso_8601_datetime_with_milliseconds
from moto.logs.models import logs_backends
from moto.s3.models import FakeBucket, FakeKey, s3_backends
from moto.s3.utils import _VersionedKeyStore
from moto.stepfunctions.parser.api import (
    CloudWatchEventsExecutionDataDetails,
    ExecutionStatus,
    GetExecutionHistoryOutput,
)
from moto.stepfunctions.parser.backend.execution import Execution
from moto.stepfunctions.parser.models import stepfunctions_parser_backends

from mlops.local.paths import write_private
from mlops.local.persistence import SnapshotFile, Source, StateError, fsync_dir

log = logging.getLogger(__name__)

STOPPED_ERROR = "LocalCloud.Stopped"
SIGNED_SERVICE = re.compile(r"Credential=[^/,]+/\d{8}/[^/]+/([^/]+)/aws4_request")
READ_ONLY_METHODS = {"GET", "HEAD", "OPTIONS"}
# Signing names of the services whose state is saved (Step Functions signs as "states").
SAVED_SERVICES = ("s3", "logs", "states")


def stopped_cause(saved_at: dt.datetime) -> str:
    return (
        "The local cloud stopped (mlops down, a crash or a reboot) while this execution ran; "
        f"its last saved state is from {saved_at.isoformat(timespec='seconds')}. Its Lambda "
        "and SageMaker processes are gone, so it was not resumed: upload the data set again "
        "(a new manifest.json version starts a new execution)."
    )


# -- which services a request may have changed -----------------------------------------------------
class ChangeTracker:
    """WSGI middleware in front of moto: remembers which services got a changing request.

    The service is read from the SigV4 credential scope (`.../us-east-1/s3/aws4_request`); an
    unsigned request marks every service. Marked before the request runs (an S3 put that then
    delivers a notification to a slow Lambda has already stored its object) and after it.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self._changed: set[str] = set()
        self._buckets: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("REQUEST_METHOD", "GET") in READ_ONLY_METHODS:
            return self.app(environ, start_response)
        match = SIGNED_SERVICE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service = match.group(1) if match else None
        bucket = request_bucket(environ) if service in ("s3", None) else ""
        self.mark(service, bucket)
        try:
            return self.app(environ, start_response)
        finally:
            self.mark(service, bucket)

    def mark(self, service: str | None, bucket: str | None = "") -> None:
        """Mark one service as changed; None (an unsigned request) marks them all. For S3,
        `bucket` names the bucket the request changed; None: any bucket may have changed."""
        with self._lock:
            self._changed.update([service] if service else SAVED_SERVICES)
            if service in ("s3", None):
                self._buckets.add(bucket or ALL_BUCKETS)

    def take_buckets(self) -> set[str]:
        """The buckets changed since the last call (and forget them); ALL_BUCKETS among them
        when a request could not be tied to one bucket."""
        with self._lock:
            buckets, self._buckets = self._buckets, set()
            return buckets

    def take(self, service: str) -> bool:
        """Whether `service` changed since the last call (and forget it)."""
        with self._lock:
            changed = service in self._changed
            self._changed.discard(service)
            return changed


ALL_BUCKETS = "*"  # not a valid bucket name: "every bucket may have changed"
LOOPBACK_HOST = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?$")


def request_bucket(environ: dict[str, Any]) -> str | None:
    """The bucket of a path-style S3 request (what boto3 sends to an http://127.0.0.1
    endpoint); None when the request may touch any bucket (virtual-host style, or no bucket in
    the path), so the caller re-saves them all."""
    if not LOOPBACK_HOST.match(environ.get("HTTP_HOST", "")):
        return None
    name = unquote(environ.get("PATH_INFO", "")).lstrip("/").split("/", 1)[0]
    return name or None


# -- S3 keys with all their versions ----------------------------------------------------------
BODY_SUFFIX = ".body"


class ObjectBodies:
    """S3 object bodies, each written ONCE to its own file under <state>/s3/objects/.

    The file is named by the BLAKE2b hash of the body (content-addressed: a re-upload of the
    same bytes shares it), written crash-safe (partial file, fsync, os.replace) before any
    snapshot that names it, and the folder fsynced once before that snapshot is written
    (`sync_new_names`), so the metadata snapshot never references a body that is not whole on
    disk. The S3 snapshot itself keeps only metadata (keys, versions, delete markers,
    etags, metadata, tags, bucket settings) and each version's body name: it stays small and is
    cheap to rewrite, and a 45 MB model archive is written once, not at every change.

    A FakeKey's body never changes in place (a PutObject makes a new FakeKey), so each FakeKey
    is hashed once while it lives (cached by identity).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._refs: dict[int, tuple[Any, str]] = {}
        self._seen: set[int] = set()
        self.bytes_written = 0
        self._names_to_sync = False  # bodies renamed into the folder since its last fsync
        self.recording: list[tuple[Any, str]] | None = None  # (key, body name) per store()

    def path(self, ref: str) -> Path:
        return self.directory / f"{ref}{BODY_SUFFIX}"

    def start_snapshot(self) -> None:
        """Forget the versions the previous snapshot did not see (deleted since)."""
        self._refs = {k: v for k, v in self._refs.items() if k in self._seen}
        self._seen = set()

    def store(self, key: Any) -> str:
        """The body file name of `key`, writing the file first when it is not on disk."""
        entry = self._refs.get(id(key))
        if entry is None or entry[0] is not key:
            body = _key_body(key)
            ref = hashlib.blake2b(body, digest_size=32).hexdigest()
            self._write(ref, body)
            entry = (key, ref)
            self._refs[id(key)] = entry
        elif not self.path(entry[1]).exists():  # removed by hand: write it again
            self._write(entry[1], _key_body(key))
        self._seen.add(id(key))
        if self.recording is not None:
            self.recording.append((key, entry[1]))
        return entry[1]

    def referenced(self) -> set[str]:
        """The body names the last snapshot used."""
        return {self._refs[i][1] for i in self._seen if i in self._refs}

    def remember(self, key: Any, ref: str) -> None:
        """A restored key's body name (so it is not hashed again)."""
        self._refs[id(key)] = (key, ref)
        self._seen.add(id(key))

    def _write(self, ref: str, body: bytes) -> None:
        path = self.path(ref)
        if not path.exists():
            write_private(path, body, sync=True)
            self.bytes_written += len(body)
            self._names_to_sync = True

    def sync_new_names(self) -> None:
        """One fsync of the folder for every body written since the last: before the snapshot
        that names them is written, so it never outlives them after a power cut."""
        if self._names_to_sync:
            fsync_dir(self.directory)
            self._names_to_sync = False

    def read(self, ref: str, snapshot: Path) -> bytes:
        path = self.path(ref)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StateError(
                f"{snapshot} names the S3 object body {path}, which is missing: move "
                f"{snapshot} away to start S3 empty, or run `mlops reset` to start the whole "
                "local cloud empty"
            ) from None

    def collect_garbage(
        self, referenced: set[str], older_than: float, before_first: Callable[[], None]
    ) -> int:
        """Remove body files no snapshot names (deleted versions); only files older than the
        snapshot just written, so a body written for a newer object is never removed.
        ``before_first`` runs once before the first removal (make that snapshot durable, so
        a power cut never leaves the previous snapshot naming a removed body)."""
        removed = 0
        if not self.directory.is_dir():
            return removed
        for path in self.directory.glob(f"*{BODY_SUFFIX}"):
            if path.name[: -len(BODY_SUFFIX)] in referenced:
                continue
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < older_than:
                    if not removed:
                        before_first()
                    path.unlink()
                    removed += 1
        return removed

    def reduce_key(self, key: FakeKey) -> tuple[Any, tuple[Any, ...]]:
        """Pickle a FakeKey as its attributes (no body) plus its body file name."""
        state = {k: v for k, v in key.__dict__.items() if k not in {"_value_buffer", "lock"}}
        return _rebuild_key, (state, self.store(key))

    def reduce_store(self, store: _VersionedKeyStore) -> tuple[Any, tuple[Any, ...]]:
        # moto's versioned key store pickles as its newest versions only: keep every version.
        # dict(store) copies the raw lists of versions (how moto itself copies it safely).
        items = [(name, list(versions)) for name, versions in dict(store).items()]
        return _rebuild_key_store, (items,)


class EncodedBuckets:
    """Each bucket pickled on its own and kept: the S3 snapshot re-encodes only the buckets a
    request changed since the last snapshot (the data set's 1,797 keys once, not at every
    model archive or capture upload: 0.04-0.16 s of CPU a snapshot, docs/performance.md).

    A bucket is re-encoded when the ChangeTracker saw a changing request naming it (or one it
    could not tie to a bucket), or when its keys are not the very objects of the cached
    encoding. Without a tracker every bucket is re-encoded every time. A cached bucket's keys
    are marked seen as if pickled, so no body it names is collected.
    """

    def __init__(self, bodies: ObjectBodies, reducers: dict[type, Callable[[Any], Any]]) -> None:
        self.bodies = bodies
        self.reducers = reducers  # for the keys and key stores inside one bucket
        self.pending: set[str] = {ALL_BUCKETS}  # changed since the last snapshot on disk
        self._cache: dict[str, tuple[list[tuple[str, list[Any]]], bytes, list[Any]]] = {}
        self.reencoded = 0  # buckets pickled (the rest came from the cache), for the bench

    def reduce_bucket(self, bucket: Any) -> tuple[Any, tuple[bytes]]:
        """Pickle a bucket as the pickled bytes of the bucket (cached when unchanged)."""
        name, keys = bucket.name, bucket_keys(bucket)
        cached = self._cache.get(name)
        if cached and not ({name, ALL_BUCKETS} & self.pending) and same_keys(cached[0], keys):
            for key, ref in cached[2]:
                self.bodies.remember(key, ref)
            return pickle.loads, (cached[1],)
        self.bodies.recording = recorded = []
        try:
            data = encode_pickle(bucket, self.reducers)
        finally:
            self.bodies.recording = None
        self._cache[name] = (keys, data, recorded)
        self.reencoded += 1
        return pickle.loads, (data,)

    def written(self, present: Iterable[str]) -> None:
        """The snapshot is on disk: forget the marks it covered and the buckets now gone."""
        self.pending = set()
        names = set(present)
        for name in [n for n in self._cache if n not in names]:
            del self._cache[name]


def bucket_keys(bucket: Any) -> list[tuple[str, list[Any]]]:
    """The bucket's key names with their version objects (moto's own safe copy)."""
    return [(name, list(versions)) for name, versions in dict(bucket.keys).items()]


def same_keys(before: list[tuple[str, list[Any]]], now: list[tuple[str, list[Any]]]) -> bool:
    """The same names holding the very same version objects (a PutObject makes a new FakeKey;
    the cache keeps the old ones alive, so an id is never reused under it)."""
    if len(before) != len(now):
        return False
    for (name, versions), (name_now, versions_now) in zip(before, now, strict=True):
        if name != name_now or len(versions) != len(versions_now):
            return False
        if any(a is not b for a, b in zip(versions, versions_now, strict=True)):
            return False
    return True


def encode_pickle(value: Any, reducers: dict[type, Callable[[Any], Any]]) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, **reducers}
    pickler.dump(value)
    return buffer.getvalue()


def _key_body(key: Any) -> bytes:
    try:
        return key.value
    except ValueError:  # a disposed (deleted) key: its buffer is closed
        return b""


def _rebuild_key(state: dict[str, Any], ref: str) -> FakeKey:
    """A FakeKey without its body; `MotoState.restore_storage` reads the body file in."""
    key = FakeKey.__new__(FakeKey)
    key.__setstate__({**state, "value": b""})
    key._mlops_body_ref = ref  # type: ignore[attr-defined]
    return key


def _rebuild_key_store(items: list[tuple[str, list[Any]]]) -> _VersionedKeyStore:
    store = _VersionedKeyStore()
    for name, versions in items:
        # bytes: a snapshot from before per-object bodies (each version pickled whole)
        loaded = [pickle.loads(v) if isinstance(v, bytes) else v for v in versions]
        dict.__setitem__(store, name, loaded)
    return store


# -- restored executions ---------------------------------------------------------------------------
class RestoredExecution(Execution):
    """An execution from a snapshot: answers Describe/List/History; never runs again."""

    def __init__(self, record: dict[str, Any], state_machine: Any) -> None:
        # Execution.__init__ prepares a run; a restored execution only carries its record.
        self.record = record
        self.name = record["name"]
        self.exec_arn = self.execution_arn = record["arn"]
        self.sm_type = getattr(state_machine, "sm_type", None)
        self.role_arn = record.get("role_arn") or getattr(state_machine, "roleArn", "")
        self.account_id = record.get("account_id", "")
        self.region_name = record.get("region_name", "")
        self.state_machine = state_machine
        self.state_machine_arn = state_machine.arn
        self._cloud_watch_logging_session = None
        self._activity_store = None
        self.execution_input = record["input"]
        self.input_data = json.loads(record["input"]) if record["input"] else {}
        self.input_details = CloudWatchEventsExecutionDataDetails(included=True)
        self.output_details = CloudWatchEventsExecutionDataDetails(included=True)
        self.trace_header = record.get("trace_header")
        self.exec_status = ExecutionStatus(record["status"])
        self.start_date = record["start_date"]
        self.stop_date = record.get("stop_date")
        self.output = record.get("output")
        self.error = record.get("error")
        self.cause = record.get("cause")
        self.exec_worker = None

    def to_history_output(self) -> GetExecutionHistoryOutput:
        return GetExecutionHistoryOutput(events=list(self.record["history"]))

    def start(self) -> None:
        raise RuntimeError(f"restored execution {self.name} cannot be started again")

    def stop(self, stop_date: dt.datetime, error: str | None, cause: str | None) -> None:
        """StopExecution of a restored execution: it is already over; nothing to stop."""


def execution_record(execution: Execution) -> dict[str, Any]:
    """An execution as plain data (what Describe/List/GetExecutionHistory answer)."""
    if isinstance(execution, RestoredExecution):
        return execution.record
    # Status before history: moto sets the status only after the last event is added, so a
    # record that says it ended has its whole history.
    status = execution.exec_status.value if execution.exec_status else "RUNNING"
    worker = execution.exec_worker
    env = getattr(worker, "env", None)
    history = env.event_manager.get_event_history() if env is not None else []
    return {
        "name": execution.name,
        "arn": execution.exec_arn,
        "role_arn": execution.role_arn,
        "account_id": execution.account_id,
        "region_name": execution.region_name,
        "input": execution.execution_input,
        "trace_header": execution.trace_header,
        "status": status,
        "start_date": execution.start_date,
        "stop_date": execution.stop_date,
        "output": execution.output if status == "SUCCEEDED" else None,
        "error": execution.error,
        "cause": execution.cause,
        "history": history,
    }


def abort_record(record: dict[str, Any], saved_at: dt.datetime) -> dict[str, Any]:
    """A RUNNING record as it ends when the cloud stopped: ABORTED, with an error and a cause."""
    cause = stopped_cause(saved_at)
    history = list(record["history"])
    last_id = max((event.get("id", 0) for event in history), default=0)
    history.append(
        {
            "id": last_id + 1,
            "previousEventId": last_id,
            "type": "ExecutionAborted",
            "timestamp": iso_8601_datetime_with_milliseconds(saved_at),
            "executionAbortedEventDetails": {"error": STOPPED_ERROR, "cause": cause},
        }
    )
    return {
        **record,
        "status": "ABORTED",
        "stop_date": saved_at,
        "error": STOPPED_ERROR,
        "cause": cause,
        "output": None,
        "history": history,
    }


# -- the three snapshots ---------------------------------------------------------------------------
class MotoState:
    """Snapshot and restore of moto's S3, Logs and Step Functions state for one account/region."""

    def __init__(self, directory: Path, account_id: str, region: str) -> None:
        self.account_id = account_id
        self.region = region
        self.files = {
            name: SnapshotFile(directory / f"{name}.snapshot")
            for name in ("s3", "logs", "stepfunctions")
        }
        self.tracker: ChangeTracker | None = None
        self._logs_fingerprint: tuple[int, int] | None = None
        self._had_running = True
        self._orphans: dict[str, list[dict[str, Any]]] = {}
        # Execution ARN -> status, in the snapshot being written and in the last one written.
        self._statuses_in_snapshot: dict[str, str] = {}
        self._saved_statuses: dict[str, str] = {}
        # Records of executions that had ended already at the previous snapshot: final, so
        # their history (moto serialises it at about 1.7 ms per event) is not read again.
        self._final_records: dict[str, dict[str, Any]] = {}
        self.bodies = ObjectBodies(directory / "s3" / "objects")
        self.buckets = EncodedBuckets(
            self.bodies,
            {_VersionedKeyStore: self.bodies.reduce_store, FakeKey: self.bodies.reduce_key},
        )
        self._snapshot_started = 0.0

    # backends -------------------------------------------------------------------------------------
    @property
    def s3(self) -> Any:
        return s3_backends[self.account_id]["aws"]

    @property
    def logs(self) -> Any:
        return logs_backends[self.account_id][self.region]

    @property
    def stepfunctions(self) -> Any:
        return stepfunctions_parser_backends[self.account_id][self.region]

    # restore --------------------------------------------------------------------------------------
    def restore_storage(self) -> dict[str, int]:
        """Buckets and log groups, before template.yaml is deployed over them.

        CreateBucket of a bucket one owns is idempotent in us-east-1, so the deployment then
        re-applies the template's bucket settings (versioning, encryption, notifications).
        """
        counts = {"buckets": 0, "objects": 0, "log_groups": 0}
        buckets = self.files["s3"].read() or {}
        for name, bucket in buckets.items():
            self._read_bodies(bucket)
            self.s3.buckets[name] = bucket
            s3_backends.bucket_accounts[name] = ("aws", self.account_id)
            counts["buckets"] += 1
            counts["objects"] += len(list(bucket.keys.iterlists()))
        groups = self.files["logs"].read() or {}
        self.logs.groups.update(groups)
        counts["log_groups"] = len(groups)
        return counts

    def _read_bodies(self, bucket: Any) -> None:
        for versions in dict(bucket.keys).values():
            for version in versions:
                ref = getattr(version, "_mlops_body_ref", None)
                if ref is not None:
                    version.value = self.bodies.read(ref, self.files["s3"].path)
                    del version._mlops_body_ref
                    self.bodies.remember(version, ref)

    def restore_executions(self) -> dict[str, int]:
        """Executions into the deployed state machines (same name, same ARN).

        Returns how many came back, how many were aborted and how many belong to a state
        machine the template no longer defines (kept in the snapshot file, not shown).
        """
        counts = {"executions": 0, "aborted": 0, "orphaned": 0}
        data = self.files["stepfunctions"].read()
        if not data:
            return counts
        saved_at: dt.datetime = data["saved_at"]
        machines = {machine.arn: machine for machine in self.stepfunctions.state_machines}
        for arn, records in data["executions"].items():
            machine = machines.get(arn)
            if machine is None:
                log.warning("%d executions of %s: that state machine is gone", len(records), arn)
                counts["orphaned"] += len(records)
                continue
            present = {execution.name for execution in machine.executions}
            for record in records:
                if record["name"] in present:
                    continue
                if record["status"] == "RUNNING":
                    record = abort_record(record, saved_at)
                    counts["aborted"] += 1
                machine.executions.append(RestoredExecution(record, machine))
                counts["executions"] += 1
        self._orphans = {
            arn: records for arn, records in data["executions"].items() if arn not in machines
        }
        return counts

    # snapshots ------------------------------------------------------------------------------------
    def track(self, server: Any) -> None:
        """Put a ChangeTracker in front of a started ThreadedMotoServer's WSGI app."""
        wsgi = server._server  # werkzeug reads `server.app` for every request
        self.tracker = ChangeTracker(wsgi.app)
        wsgi.app = self.tracker

    def sources(self) -> Iterable[Source]:
        reducers = {FakeBucket: self.buckets.reduce_bucket}
        yield Source(
            "s3",
            self.files["s3"],
            self._s3_snapshot,
            lambda: self._changed("s3"),
            reducers,
            before_write=self.bodies.sync_new_names,
            after_write=self._s3_written,
        )
        yield Source("logs", self.files["logs"], self._logs_snapshot, self._logs_due)

    def execution_source(self) -> Source:
        """Step Functions: added after every other source, so that the records a run wrote
        (S3 objects, SageMaker jobs and endpoints) are on disk before its end is."""
        return Source(
            "stepfunctions",
            self.files["stepfunctions"],
            self._sfn_snapshot,
            self._sfn_due,
            after_write=self._sfn_written,
        )

    def execution_started_or_ended(self) -> bool:
        """Whether an execution started or ended since the last Step Functions snapshot on
        disk: the Persister then saves every service at once, spacing or not, so a crash
        right after a run ends never brings it back ABORTED (nor without its records)."""
        return self._execution_statuses() != self._saved_statuses

    def _execution_statuses(self) -> dict[str, str]:
        return {
            execution.exec_arn: execution.exec_status.value
            for machine in list(self.stepfunctions.state_machines)
            for execution in list(machine.executions)
            if execution.exec_status is not None
        }

    def _changed(self, service: str) -> bool:
        return self.tracker is None or self.tracker.take(service)

    def _s3_snapshot(self) -> dict[str, Any]:
        self._snapshot_started = time.time()
        self.bodies.start_snapshot()
        self.buckets.pending |= self.tracker.take_buckets() if self.tracker else {ALL_BUCKETS}
        return dict(self.s3.buckets)

    def _s3_written(self) -> None:
        """The metadata snapshot is on disk: the bodies it no longer names can go."""
        self.buckets.written(list(self.s3.buckets))
        snapshot_folder = self.files["s3"].path.parent
        removed = self.bodies.collect_garbage(
            self.bodies.referenced(),
            self._snapshot_started,
            before_first=lambda: fsync_dir(snapshot_folder),
        )
        if removed:
            log.info("removed %d S3 object bodies no version names any more", removed)

    def _logs_snapshot(self) -> dict[str, Any]:
        return dict(self.logs.groups)

    def _logs_due(self) -> bool:
        """Lambda logs reach moto in-process, not over HTTP: compare a count of events instead."""
        groups = list(self.logs.groups.values())
        streams = [s for g in groups for s in list(g.streams.values())]
        fingerprint = (len(streams), sum(len(s.events) for s in streams))
        changed = fingerprint != self._logs_fingerprint or self._changed("logs")
        self._logs_fingerprint = fingerprint
        return changed

    def _sfn_due(self) -> bool:
        """While an execution runs its history grows without a request to moto."""
        running = "RUNNING" in self._execution_statuses().values()
        due = running or self._had_running or self._changed("states")
        self._had_running = running
        return due

    def _sfn_snapshot(self) -> dict[str, Any]:
        # Statuses read before the records: one that ends in between shows as a change again.
        self._statuses_in_snapshot = self._execution_statuses()
        executions = {
            machine.arn: [self._record(e) for e in list(machine.executions)]
            for machine in list(self.stepfunctions.state_machines)
        }
        for arn, records in self._orphans.items():
            executions.setdefault(arn, records)
        return {"saved_at": dt.datetime.now(dt.UTC), "executions": executions}

    def _record(self, execution: Execution) -> dict[str, Any]:
        """The execution's record; cached once the last snapshot on disk saw it ended too
        (moto sets an ending execution's output and error just after its status)."""
        arn = execution.exec_arn
        if arn in self._final_records:
            return self._final_records[arn]
        record = execution_record(execution)
        if record["status"] != "RUNNING" and self._saved_statuses.get(arn) == record["status"]:
            self._final_records[arn] = record
        return record

    def _sfn_written(self) -> None:
        self._saved_statuses = self._statuses_in_snapshot


__all__ = ["SAVED_SERVICES", "STOPPED_ERROR", "ChangeTracker", "MotoState", "RestoredExecution"]
