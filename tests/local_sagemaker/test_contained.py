"""Names from outside (S3 keys, request fields) cannot put a path outside its folder.

The traversal key is put straight into the local S3 after the data set was laid out (after
validation, as a careless or hostile user would), then the job starts: it fails naming the key
and nothing lands outside the job folder.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mlops.local.paths import PathEscapeError, contained, write_private
from mlops.manifest import DatasetFolderError, list_dataset_files

from .helpers import DATA_BUCKET, DATA_URI, hyperparameters, training_request, wait_training


def escaping_key(prefix: str, depth: int, name: str) -> str:
    return f"{prefix}/000.zero/" + "../" * depth + name


def test_training_job_fails_naming_a_traversal_key_and_writes_nothing_outside(
    sm: Any, s3: Any, service: Any, tmp_path: Path
) -> None:
    name = "tj-traversal"
    channel = "train"
    prefix = f"datasets/evil-{name}/{channel}"
    s3.put_object(Bucket=DATA_BUCKET, Key=f"{prefix}/000.zero/ok.txt", Body=b"fine")
    job_dir = service.config.state_dir.resolve() / "jobs" / name
    target = job_dir / "input" / "data" / channel
    # enough '..' to climb from <target>/000.zero to tmp_path, then a file there
    depth = len((target / "000.zero").relative_to(tmp_path.resolve()).parts)
    key = escaping_key(prefix, depth, f"escaped-{name}.txt")
    naive = Path(os.path.normpath(target / key[len(prefix) + 1 :]))
    assert naive == tmp_path.resolve() / f"escaped-{name}.txt"  # where a naive join writes
    s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=b"written outside the job folder")
    channels = [
        {
            "ChannelName": channel,
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{DATA_BUCKET}/{prefix}"}
            },
        }
    ]

    sm.create_training_job(**training_request(name, InputDataConfig=channels))
    described = wait_training(sm, name)

    assert described["TrainingJobStatus"] == "Failed"
    assert key in described["FailureReason"]
    assert "outside" in described["FailureReason"]
    assert not naive.exists()
    outside = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and not p.resolve().is_relative_to(service.config.state_dir.resolve())
    ]
    assert outside == []


def test_training_job_refuses_a_local_path_that_climbs_out(sm: Any, service: Any) -> None:
    name = "tj-localpath"
    request = training_request(
        name,
        CheckpointConfig={
            "S3Uri": f"{DATA_URI}-checkpoints/{name}",
            "LocalPath": "/opt/ml/../../../../../../tmp/checkpoints",
        },
    )
    sm.create_training_job(**request)
    described = wait_training(sm, name)
    assert described["TrainingJobStatus"] == "Failed"
    assert (
        "'/opt/ml/../../../../../../tmp/checkpoints' resolves outside"
        in (described["FailureReason"])
    )


def test_training_job_refuses_an_entry_point_outside_the_source(sm: Any, service: Any) -> None:
    name = "tj-program"
    request = training_request(name, HyperParameters=hyperparameters(epochs=1))
    request["HyperParameters"]["sagemaker_program"] = json.dumps("../../../../../bin/true")
    sm.create_training_job(**request)
    described = wait_training(sm, name)
    assert described["TrainingJobStatus"] == "Failed"
    assert "sagemaker_program" in described["FailureReason"]
    assert "outside" in described["FailureReason"]


@pytest.mark.parametrize(
    "names",
    [("..",), ("a", "..", ".."), ("/etc/passwd",), ("a/../../b",), ("",), ("a\x00b",)],
)
def test_contained_refuses_names_that_leave_the_folder(tmp_path: Path, names: tuple) -> None:
    with pytest.raises(PathEscapeError):
        contained(tmp_path, *names)


def test_contained_follows_symlinks_before_deciding(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "link").symlink_to(tmp_path)
    assert contained(tmp_path / "base", "a/./b/../c") == (tmp_path / "base" / "a" / "c")
    with pytest.raises(PathEscapeError):
        contained(tmp_path / "base", "link", "outside.txt")


def test_write_private_creates_the_file_0600_and_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"
    path.write_text("old")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        write_private(path, '{"api_key": "secret"}')
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"api_key": "secret"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.json"]


def test_upload_listing_skips_symlinks_and_says_which(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = tmp_path / "secret.txt"
    secret.write_text("host file")
    for split in ("train", "valid", "test"):
        (data / split / "000.zero").mkdir(parents=True)
        (data / split / "000.zero" / "a.png").write_bytes(b"png")
    (data / "train" / "000.zero" / "b.png").symlink_to(secret)
    (data / "train" / "001.one").symlink_to(tmp_path)  # a class folder that leads out
    skipped: list[Path] = []
    files = list_dataset_files(data, skipped=skipped)
    assert sorted(f.key for f in files) == [
        f"{s}/000.zero/a.png" for s in ("test", "train", "valid")
    ]
    assert sorted(p.name for p in skipped) == ["001.one", "b.png"]


def test_upload_listing_refuses_a_split_folder_that_is_a_link(tmp_path: Path) -> None:
    data = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "000.zero").mkdir(parents=True)
    (elsewhere / "000.zero" / "a.png").write_bytes(b"png")
    for split in ("valid", "test"):
        (data / split / "000.zero").mkdir(parents=True)
    (data / "train").symlink_to(elsewhere)
    with pytest.raises(DatasetFolderError, match="symbolic link"):
        list_dataset_files(data)
