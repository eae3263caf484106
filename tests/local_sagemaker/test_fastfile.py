"""FastFile input mode on the local SageMaker: a channel is the S3 prefix's names and sizes
when the script starts, and each object's bytes arrive when the script opens the file.

The fixture script records every train file's blocks on disk before it reads it, then what it
read; the objects are the conftest's tiny data set (datasets/tiny/<split>/<label>/NNNN.txt).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from mlops.local.sagemaker.fastfile import is_placeholder

from .helpers import ARTIFACTS_BUCKET, DATA_BUCKET, training_request, wait_training


def fast_file_request(name: str, **overrides: Any) -> dict[str, Any]:
    body = training_request(name, **overrides)
    body["AlgorithmSpecification"]["TrainingInputMode"] = "FastFile"
    return body


def objects(s3: Any, split: str) -> dict[str, str]:
    prefix = f"datasets/tiny/{split}/"
    listed = s3.list_objects_v2(Bucket=DATA_BUCKET, Prefix=prefix)["Contents"]
    return {
        item["Key"][len(prefix) :]: s3.get_object(Bucket=DATA_BUCKET, Key=item["Key"])["Body"]
        .read()
        .decode()
        for item in listed
    }


def output_file(s3: Any, job: str, name: str) -> Any:
    body = s3.get_object(Bucket=ARTIFACTS_BUCKET, Key=f"jobs/{job}/output/output.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(body["Body"].read())) as archive:
        return json.loads(archive.extractfile(name).read())


def assert_read_lazily(report: dict[str, Any], expected: dict[str, str]) -> None:
    """Every object was there by name and size with no bytes on disk, and reads gave its bytes."""
    assert sorted(report) == sorted(expected)
    for relative, seen in report.items():
        assert seen["text"] == expected[relative], relative
        assert seen["size"] == len(expected[relative].encode()), relative
        assert seen["blocks_before_read"] == 0, f"{relative} was on disk before the read"
        assert seen["blocks_after_read"] > 0, relative


def test_fastfile_channel_is_fetched_when_the_script_reads_it(
    sm: Any, s3: Any, service: Any
) -> None:
    sm.create_training_job(**fast_file_request("fastfile-one"))
    job = wait_training(sm, "fastfile-one")

    job_dir = service.config.state_dir / "jobs" / "fastfile-one"
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert_read_lazily(output_file(s3, "fastfile-one", "channel.json"), objects(s3, "train"))
    # The script never opened the valid channel: it is still names and sizes, no bytes.
    valid = [p for p in (job_dir / "input/data/valid").rglob("*") if p.is_file()]
    assert len(valid) == 6 and all(is_placeholder(p) for p in valid)
    config = json.loads((job_dir / "input/config/inputdataconfig.json").read_text())
    assert config["train"]["TrainingInputMode"] == "FastFile"
    log = (job_dir / "logs/training.log").read_text()
    assert "Listed 6 objects for FastFile channel train" in log
    assert "Downloaded" not in log


def test_fastfile_each_host_reads_its_own_view(sm: Any, s3: Any, service: Any) -> None:
    body = fast_file_request("fastfile-two")
    body["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**body)
    job = wait_training(sm, "fastfile-two", timeout=120)

    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    job_dir = service.config.state_dir / "jobs" / "fastfile-two"
    second = json.loads((job_dir / "hosts/algo-2/output/data/channel.json").read_text())
    assert_read_lazily(second, objects(s3, "train"))
    assert_read_lazily(output_file(s3, "fastfile-two", "channel.json"), objects(s3, "train"))


def test_channel_input_mode_overrides_the_jobs(sm: Any, s3: Any, service: Any) -> None:
    """SageMaker takes the channel's InputMode first: a File channel of a FastFile job is
    copied before the script starts."""
    body = fast_file_request("fastfile-mixed")
    body["InputDataConfig"][0]["InputMode"] = "File"  # train
    sm.create_training_job(**body)
    job = wait_training(sm, "fastfile-mixed")

    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    report = output_file(s3, "fastfile-mixed", "channel.json")
    assert all(seen["blocks_before_read"] > 0 for seen in report.values())
    valid = Path(service.config.state_dir / "jobs/fastfile-mixed/input/data/valid")
    assert all(is_placeholder(p) for p in valid.rglob("*") if p.is_file())


def test_pipe_mode_of_the_job_is_refused_with_the_modes_that_work(sm: Any) -> None:
    body = training_request("pipe-job")
    body["AlgorithmSpecification"]["TrainingInputMode"] = "Pipe"
    sm.create_training_job(**body)
    job = wait_training(sm, "pipe-job")

    assert job["TrainingJobStatus"] == "Failed"
    assert "Pipe input mode is not emulated locally; use File or FastFile" in job["FailureReason"]
