"""Sending a data set folder to S3: parallel PutObjects, one progress line, nothing sent twice.

Why parallel: a small image's PutObject is one round trip (a few ms to the local cloud, tens
of ms to S3), so a serial upload of 100k files waits on the network for most of an hour. A
pool of ``UPLOAD_WORKERS`` threads shares one client (boto3 clients are thread-safe) whose
connection pool is as large as the pool, so no thread waits for a connection.

Why resumable: an upload of 100k files that stops at 60k should not start over. An object
already under the prefix with the file's size and an ETag equal to the file's MD5 (what S3
answers for a single-part upload under SSE-S3, the data bucket's encryption) is skipped;
anything else is sent again, so a changed file with the same size is never left stale.

Each file is read once: its MD5 (the skip check) and SHA-256 (the manifest's checksum) come
from the bytes that are sent. Files from ``MULTIPART_BYTES`` up go through boto3's managed
transfer (multipart, retried per part) and are always sent: their ETag is not an MD5.
"""

from __future__ import annotations

import hashlib
import mimetypes
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

from botocore.config import Config
from pipeline_common.naming import MANIFEST_FILE
from pipeline_common.parallel import bounded_map

from mlops.manifest import DatasetFile

# Threads sending files at once; measured against the local cloud in bench/growth.py (more
# threads only queue in the GIL), and enough to hide S3's latency for small files.
UPLOAD_WORKERS = 16
# boto3's own multipart threshold (TransferConfig): smaller files are one PutObject.
MULTIPART_BYTES = 8 * 1024 * 1024
# Futures in flight at once: the pool's backlog stays bounded however many files there are.
IN_FLIGHT_PER_WORKER = 4


def upload_client_config(workers: int = UPLOAD_WORKERS) -> Config:
    """A connection pool as large as the thread pool (botocore's default is 10)."""
    return Config(max_pool_connections=workers, retries={"mode": "standard", "max_attempts": 5})


@dataclass(frozen=True)
class Remote:
    """What S3 already holds at a key: its size and ETag (quotes stripped)."""

    size: int
    etag: str


@dataclass
class UploadSummary:
    """What an upload did: files sent and skipped, bytes sent, SHA-256 per key, and objects
    under the prefix that the folder does not have (validation will name them)."""

    sent: int = 0
    skipped: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    sha256: dict[str, str] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)

    @property
    def files_per_s(self) -> float:
        return (self.sent + self.skipped) / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """One progress line on stderr: rewritten in place on a terminal (at most 5 times a
    second), or a new line per 10% when stderr is a file or a pipe, so logs stay short."""

    def __init__(self, total: int, what: str, stream: TextIO | None = None) -> None:
        self.total, self.what = total, what
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self.done = self.skipped = self.bytes = 0
        self.last_draw = 0.0
        self.last_decile = 0

    def advance(self, size: int, skipped: bool) -> None:
        self.done += 1
        self.skipped += skipped
        self.bytes += 0 if skipped else size
        now = time.perf_counter()
        if self.tty:
            if self.done == self.total or now - self.last_draw >= 0.2:
                self.last_draw = now
                end = "\n" if self.done == self.total else ""
                print(f"\r{self.line(now)}", end=end, file=self.stream, flush=True)
            return
        decile = 10 * self.done // max(self.total, 1)
        if decile > self.last_decile or self.done == self.total:
            self.last_decile = decile
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        skipped = f", {self.skipped} already there" if self.skipped else ""
        return (
            f"  {self.what} {self.done}/{self.total} files ({100 * self.done // self.total}%)"
            f"{skipped}, {self.bytes / 1e6:.1f} MB, {rate:.0f} files/s, "
            f"{elapsed:.0f} s, about {left:.0f} s left"
        )


def remote_objects(s3: Any, bucket: str, prefix: str) -> dict[str, Remote]:
    """Every object under `prefix` (keys relative to it), one ListObjectsV2 page at a time."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            etag = str(item.get("ETag", "")).strip('"')
            found[item["Key"][len(prefix) :]] = Remote(int(item.get("Size", 0)), etag)
    return found


def send_file(
    s3: Any, bucket: str, prefix: str, item: DatasetFile, remote: Remote | None, checksums: bool
) -> tuple[bool, str | None]:
    """Send one file unless S3 has it already; returns (skipped, its SHA-256 or None)."""
    content_type = mimetypes.guess_type(item.path.name)[0] or "application/octet-stream"
    if item.size >= MULTIPART_BYTES:
        s3.upload_file(
            str(item.path), bucket, prefix + item.key, ExtraArgs={"ContentType": content_type}
        )
        return False, _sha256_of_file(item) if checksums else None
    data = item.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest() if checksums else None
    if remote is not None and remote.size == len(data) and remote.etag == _md5(data):
        return True, digest
    s3.put_object(Bucket=bucket, Key=prefix + item.key, Body=data, ContentType=content_type)
    return False, digest


def _md5(data: bytes) -> str:
    """S3's ETag of a single-part upload (not used for security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256_of_file(item: DatasetFile) -> str:
    digest = hashlib.sha256()
    with item.path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_files(
    s3: Any,
    bucket: str,
    prefix: str,
    files: list[DatasetFile],
    *,
    checksums: bool = True,
    workers: int = UPLOAD_WORKERS,
    stream: TextIO | None = None,
) -> UploadSummary:
    """Send `files` under `prefix` with `workers` threads, skipping what S3 already has.

    The client's connection pool should hold `workers` connections
    (:func:`upload_client_config`). A failed file stops the upload with its error: the
    manifest is not written, and running the upload again sends only what is missing.
    """
    started = time.perf_counter()
    remote = remote_objects(s3, bucket, prefix)
    local = {item.key for item in files}
    summary = UploadSummary(
        strays=sorted(k for k in remote if k not in local and k != MANIFEST_FILE)
    )
    progress = Progress(len(files), "uploaded", stream)

    def work(item: DatasetFile) -> tuple[bool, str | None]:
        return send_file(s3, bucket, prefix, item, remote.get(item.key), checksums)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload") as pool:
        for item, (skipped, digest) in bounded_map(
            pool, work, files, workers * IN_FLIGHT_PER_WORKER
        ):
            summary.skipped += skipped
            summary.sent += not skipped
            summary.bytes_sent += 0 if skipped else item.size
            if digest is not None:
                summary.sha256[item.key] = digest
            progress.advance(item.size, skipped)
    summary.seconds = time.perf_counter() - started
    return summary
