"""boto3 access to the local cloud's S3 and CloudWatch Logs, used by jobs and endpoints.

Endpoints come from SageMakerConfig.aws_endpoint_urls when given, else from boto3's own
resolution (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_LOGS / AWS_ENDPOINT_URL), so nothing here
knows whether it talks to moto or to AWS.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mlops.local.paths import PathEscapeError, contained

logger = logging.getLogger(__name__)


DOWNLOAD_THREADS = 8  # below botocore's default pool of 10 connections per client
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


class S3UriError(ValueError):
    """An S3 URI that does not parse, or names nothing."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/key/prefix' -> ('bucket', 'key/prefix')."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise S3UriError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    return parsed.netloc, parsed.path.lstrip("/")


class UnsafeKeyError(ValueError):
    """An S3 key that would be written outside the folder it is downloaded into."""

    def __init__(self, bucket: str, key: str, target: Path) -> None:
        super().__init__(
            f"the S3 key s3://{bucket}/{key} would be written outside {target}: refused "
            "(remove the object or rename it without '..')"
        )
        self.key = key


class AwsClients:
    """Creates boto3 clients for the local cloud (one per service, shared across threads)."""

    def __init__(
        self,
        region: str,
        endpoint_urls: dict[str, str],
        credentials: dict[str, str] | None = None,
        role_credentials: Callable[[str], dict[str, str]] | None = None,
    ) -> None:
        self.region = region
        self.endpoint_urls = dict(endpoint_urls)
        self.credentials = credentials  # boto3 client keyword arguments; None: the default chain
        self.role_credentials = role_credentials
        self._clients: dict[str, Any] = {}
        self._by_role: dict[str, AwsClients] = {}
        self._lock = threading.Lock()

    def for_role(self, role_arn: str | None) -> AwsClients:
        """Clients signed as a session on ``role_arn`` (a job's execution role), so that the
        role's policy decides what the job may read and write; self when no roles are known."""
        if not role_arn or self.role_credentials is None:
            return self
        with self._lock:
            if role_arn not in self._by_role:
                self._by_role[role_arn] = AwsClients(
                    self.region, self.endpoint_urls, self.role_credentials(role_arn)
                )
            return self._by_role[role_arn]

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._new_client(service)
            return self._clients[service]

    def _new_client(self, service: str) -> Any:
        kwargs: dict[str, Any] = {
            "region_name": self.region,
            "config": Config(retries={"max_attempts": 3, "mode": "standard"}),
        }
        if service in self.endpoint_urls:
            kwargs["endpoint_url"] = self.endpoint_urls[service]
        session = boto3.session.Session()
        if self.credentials is not None:
            kwargs |= self.credentials
        elif session.get_credentials() is None:
            # The local cloud accepts any credentials; a bare machine has none configured.
            kwargs |= {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return session.client(service, **kwargs)

    # --- S3 -----------------------------------------------------------------------------------

    def download_prefix(self, uri: str, target: Path) -> int:
        """Copy every object under an S3 prefix into ``target`` (keys relative to the prefix).

        Returns the number of files; raises FileNotFoundError when the prefix holds nothing,
        which SageMaker reports as a ClientError of the job, and UnsafeKeyError, before anything
        is written, when a key would land outside ``target`` (``..``, symlinks).
        """
        s3 = self.client("s3")
        planned = list_prefix(self, uri, target)
        for folder in {item.destination.parent for item in planned}:
            folder.mkdir(parents=True, exist_ok=True)

        def fetch(item: ListedObject) -> None:
            body = s3.get_object(Bucket=item.bucket, Key=item.key)["Body"]
            with item.destination.open("wb") as stream:
                for chunk in body.iter_chunks(DOWNLOAD_CHUNK_BYTES):
                    stream.write(chunk)

        # Several GETs in flight, as SageMaker's File mode downloads a channel: one at a time
        # through s3transfer's download_file cost 9-13 ms a small file here, 8 GetObjects in
        # flight 6 ms (the 1,797 digits: about 22 s -> 11 s a job at load 10; docs/performance.md).
        with concurrent.futures.ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            list(pool.map(fetch, planned))  # re-raises the first error
        return len(planned)

    def download_file(self, uri: str, destination: Path) -> Path:
        bucket, key = parse_s3_uri(uri)
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.client("s3").download_file(bucket, key, str(destination))
        return destination

    def upload_file(self, source: Path, uri: str) -> None:
        bucket, key = parse_s3_uri(uri)
        self.client("s3").upload_file(str(source), bucket, key)

    def upload_directory(self, source: Path, uri: str) -> int:
        """Upload every file under ``source`` to ``uri/<relative path>``; returns the count.

        Symbolic links are left out: a link in a job's output must not upload a host file."""
        count = 0
        for path in sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink()):
            self.upload_file(path, uri.rstrip("/") + "/" + path.relative_to(source).as_posix())
            count += 1
        return count


@dataclass(frozen=True)
class ListedObject:
    """One object under a channel's prefix and where it lands in the channel folder."""

    bucket: str
    key: str
    size: int
    destination: Path


def list_prefix(clients: AwsClients, uri: str, target: Path) -> list[ListedObject]:
    """Every object under an S3 prefix with its place in ``target`` (keys relative to the
    prefix; "folder" keys ending in / left out). FileNotFoundError when there is none;
    UnsafeKeyError when a key would land outside ``target``. Nothing is written."""
    bucket, prefix = parse_s3_uri(uri)
    listed: list[ListedObject] = []
    paginator = clients.client("s3").get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/"):
                continue
            relative = key[len(prefix) :].lstrip("/") or Path(key).name
            try:
                listed.append(ListedObject(bucket, key, item["Size"], contained(target, relative)))
            except PathEscapeError:
                raise UnsafeKeyError(bucket, key, target) from None
    if not listed:
        raise FileNotFoundError(f'No S3 objects found under S3 URL "{uri}"')
    return listed


def make_tarball(source: Path, destination: Path) -> Path:
    """Tar+gzip the contents of ``source`` (no leading folder), as SageMaker packs /opt/ml/model."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(destination, "w:gz") as archive:
        for path in sorted(source.iterdir()):
            archive.add(path, arcname=path.name)
    return destination


def extract_tarball(archive_path: Path, target: Path) -> None:
    """Unpack a tar.gz refusing members that would land outside ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "r:*") as archive:
        archive.extractall(target, filter="data")


class LogShipper:
    """Ships lines to one CloudWatch Logs stream in batches, and to a local file always.

    CloudWatch is best effort: when the logs endpoint is unreachable the job still runs and
    the local file keeps every line (a warning says so once).
    """

    def __init__(
        self,
        clients: AwsClients,
        group: str,
        stream: str,
        local_file: Path,
        flush_interval_s: float,
    ) -> None:
        self.group = group
        self.stream = stream
        self._clients = clients
        self._flush_interval_s = flush_interval_s
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._cloudwatch_ok = True
        local_file.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(local_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._create_stream()

    def _create_stream(self) -> None:
        logs = self._clients.client("logs")
        try:
            try:
                logs.create_log_group(logGroupName=self.group)
            except ClientError as error:
                if error.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                    raise
            logs.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        except (ClientError, BotoCoreError) as error:
            self._disable_cloudwatch(error)

    def _disable_cloudwatch(self, error: Exception) -> None:
        if self._cloudwatch_ok:
            logger.warning(
                "CloudWatch Logs unavailable for %s/%s (%s); lines are kept in %s only",
                self.group,
                self.stream,
                error,
                self._file.name,
            )
        self._cloudwatch_ok = False

    def write(self, line: str) -> None:
        line = line.rstrip("\n")
        with self._lock:
            self._file.write(line + "\n")
            self._pending.append({"timestamp": int(time.time() * 1000), "message": line or " "})
            due = time.monotonic() - self._last_flush >= self._flush_interval_s
        if due or len(self._pending) >= 500:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
            if not batch or not self._cloudwatch_ok:
                return
            try:
                self._clients.client("logs").put_log_events(
                    logGroupName=self.group, logStreamName=self.stream, logEvents=batch
                )
            except (ClientError, BotoCoreError) as error:
                self._disable_cloudwatch(error)

    def close(self) -> None:
        self.flush()
        with self._lock:
            if not self._file.closed:
                self._file.close()


def aws_env_for_children(clients: AwsClients) -> dict[str, str]:
    """Endpoint variables for processes the service starts, so their boto3 calls stay local."""
    env: dict[str, str] = {}
    for service, url in clients.endpoint_urls.items():
        env[f"AWS_ENDPOINT_URL_{service.upper()}"] = url
    env.setdefault("AWS_DEFAULT_REGION", clients.region)
    env.setdefault("AWS_REGION", clients.region)
    if "AWS_ACCESS_KEY_ID" not in os.environ:
        env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return env
