"""`mlops upload`'s transfer (mlops/upload.py): parallel, resumable, and quiet in logs."""

from __future__ import annotations

import io
import re
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from mlops.manifest import build_manifest, list_dataset_files, sha256_of
from mlops.sample_data import write_digits
from mlops.upload import Progress, upload_client_config, upload_files

BUCKET = "data"
PREFIX = "datasets/digits/"


@pytest.fixture
def s3(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", config=upload_client_config(8))
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def digits(tmp_path) -> Path:
    root = tmp_path / "digits"
    write_digits(root, max_per_class=12, size=8, seed=0)
    return root


def stored(s3) -> dict[str, bytes]:
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
        for item in page.get("Contents", [])
    ]
    return {key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def test_upload_files_sends_every_file_with_its_bytes_and_type(s3, digits):
    files = list_dataset_files(digits)

    summary = upload_files(s3, BUCKET, PREFIX, files, workers=8, stream=io.StringIO())

    assert (summary.sent, summary.skipped) == (len(files), 0)
    assert stored(s3) == {PREFIX + f.key: f.path.read_bytes() for f in files}
    head = s3.head_object(Bucket=BUCKET, Key=PREFIX + files[0].key)
    assert head["ContentType"] == "image/png"
    assert summary.sha256 == {f.key: sha256_of(f.path) for f in files}
    assert build_manifest("digits", files, sha256=summary.sha256) == build_manifest("digits", files)


def test_upload_files_again_skips_what_is_there_and_resends_a_changed_file(s3, digits):
    files = list_dataset_files(digits)
    upload_files(s3, BUCKET, PREFIX, files, workers=8, stream=io.StringIO())
    changed = files[3]
    data = bytearray(changed.path.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: the ETag (MD5) differs
    changed.path.write_bytes(bytes(data))

    summary = upload_files(s3, BUCKET, PREFIX, files, workers=8, stream=io.StringIO())

    assert (summary.sent, summary.skipped) == (1, len(files) - 1)
    assert stored(s3)[PREFIX + changed.key] == bytes(data)


def test_upload_files_names_objects_the_folder_does_not_have(s3, digits):
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "train/000.zero/old.png", Body=b"old")
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "manifest.json", Body=b"{}")

    summary = upload_files(s3, BUCKET, PREFIX, list_dataset_files(digits), stream=io.StringIO())

    assert summary.strays == ["train/000.zero/old.png"]


def test_progress_off_a_terminal_prints_one_line_per_tenth():
    stream = io.StringIO()
    progress = Progress(1_000, "uploaded", stream)
    for _ in range(1_000):
        progress.advance(100, skipped=False)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert "\r" not in stream.getvalue()
    assert re.match(r"  uploaded 1000/1000 files \(100%\), 0.1 MB, \d+ files/s", lines[-1])


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line():
    stream = Terminal()
    progress = Progress(3, "uploaded", stream)
    for skipped in (True, False, False):
        progress.advance(10, skipped=skipped)

    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "3/3 files (100%), 1 already there" in text
