"""Benchmark: a dogImages-sized data set through upload, validation and File / FastFile training.

A synthetic data set of the dog-breed data's shape (133 classes; 50 train, 7 valid and 6 test
images a class: 8,379 JPEGs against dogImages' 8,351), each a 32-pixel JPEG of its class's
colour pattern with noise, goes through the local cloud's pieces, timed one by one:

- **upload**: every file to the local S3 (moto on 127.0.0.1) with `mlops upload`'s transfer
  (mlops/upload.py: parallel PutObjects on one client; mlops.manifest's file list and
  manifest), then manifest.json;
- **validation**: the ValidateData Lambda's handler (functions/validate_dataset/app.py), run
  in this process with the environment template.yaml gives it, against that S3;
- **training**: one epoch of train.py (resnet18 from scratch, 16-pixel inputs, batch 64)
  through the local SageMaker and the real training toolkit, once with every channel in File
  mode and once in FastFile mode, one after the other (so they never share the cores).

Per mode: the channel set-up (the Downloading status: the copy in File mode, the listing in
FastFile mode), the time from CreateTrainingJob to train.py's `[setup]` line (its first
training step follows it; train.py decodes every image while scanning the splits, so in both
modes every object has been read by then), the epoch (train.py's history), and the whole job
(CreateTrainingJob to Completed). Nothing is a goal: the numbers are for docs/training-at-scale.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import REPO_ROOT, Settings, info, log, result

NAME = "scale"
TITLE = "Scale: dogImages-sized upload, validation, File vs FastFile training"
MODES = ("File", "FastFile")
SETUP_LINE = "[setup] model="
REGION = "us-east-1"


@dataclass(frozen=True)
class Size:
    classes: int
    per_class: dict[str, int]
    pixels: int
    image_size: int


def size_for(quick: bool) -> Size:
    if quick:
        return Size(
            classes=3, per_class={"train": 5, "valid": 2, "test": 2}, pixels=16, image_size=8
        )
    return Size(
        classes=133, per_class={"train": 50, "valid": 7, "test": 6}, pixels=32, image_size=16
    )


def write_dataset(root: Path, size: Size, seed: int = 0) -> int:
    """<split>/NNN.Class_name/NNNN.jpg; each class a colour gradient, each image its noise."""
    rng = np.random.default_rng(seed)
    count = 0
    ramp = np.linspace(0, 1, size.pixels, dtype=np.float32)
    for index in range(size.classes):
        base = rng.uniform(40, 215, size=3).astype(np.float32)
        slope = rng.uniform(-40, 40, size=3).astype(np.float32)
        folder = f"{index + 1:03d}.Breed_{index + 1:03d}"
        pattern = base + slope * (ramp[:, None, None] + ramp[None, :, None])
        for split, images in size.per_class.items():
            target = root / split / folder
            target.mkdir(parents=True, exist_ok=True)
            for number in range(images):
                noise = rng.normal(0, 12, size=pattern.shape)
                pixels = np.clip(pattern + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(target / f"{number:04d}.jpg", quality=90)
                count += 1
    return count


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def local_client(service: str, url: str, config: Any = None) -> Any:
    """A boto3 client of the local cloud's `service` at `url`, with its test credentials."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


class LocalS3:
    """moto's server on 127.0.0.1 (a free port) with the template's two buckets."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def __enter__(self) -> LocalS3:

        from tests.support import template

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        names = template.physical_names()
        self.data_bucket, self.artifacts_bucket = names["DataBucket"], names["ArtifactsBucket"]
        self.s3 = local_client("s3", self.url)
        for bucket in (self.data_bucket, self.artifacts_bucket):
            self.s3.create_bucket(Bucket=bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def upload(local: LocalS3, root: Path, dataset: str) -> tuple[float, str]:
    """Every file then manifest.json, with `mlops upload`'s transfer (mlops/upload.py:
    parallel PutObjects on one client); (seconds, manifest key)."""
    import io

    from pipeline_common.naming import dataset_prefix, manifest_key

    from mlops.manifest import build_manifest, list_dataset_files
    from mlops.upload import upload_client_config, upload_files

    started = time.perf_counter()
    files = list_dataset_files(root)
    s3 = local_client("s3", local.url, upload_client_config())
    sent = upload_files(s3, local.data_bucket, dataset_prefix(dataset), files, stream=io.StringIO())
    key = manifest_key(dataset)
    manifest = build_manifest(dataset, files, sha256=sent.sha256)
    local.s3.put_object(Bucket=local.data_bucket, Key=key, Body=json.dumps(manifest).encode())
    return time.perf_counter() - started, key


def validate(local: LocalS3, dataset: str, key: str) -> tuple[float, dict[str, Any]]:
    """The ValidateData handler with the template's environment; (seconds, its answer)."""
    import importlib.util

    from tests.support import template
    from tests.support.lambda_env import RUNTIME_ENVIRONMENT, LambdaContext

    variables = template.function_environment(
        "ValidateDatasetFunction", template.template_resolver()
    )
    with environment({**RUNTIME_ENVIRONMENT, **variables, "AWS_ENDPOINT_URL": local.url}):
        path = REPO_ROOT / "functions" / "validate_dataset" / "app.py"
        spec = importlib.util.spec_from_file_location("bench_scale_validate_app", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        event = {
            "bucket": local.data_bucket,
            "manifest_key": key,
            "dataset": dataset,
            "execution_name": f"{dataset}-bench",
        }
        started = time.perf_counter()
        answer = module.lambda_handler(event, LambdaContext(function_name="validate-dataset"))
        return time.perf_counter() - started, answer


def training_request(name: str, mode: str, channels: dict[str, str], size: Size, source: str):
    from pipeline_common.metrics import METRIC_DEFINITIONS

    hyperparameters = {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": source,
        "sagemaker_region": REGION,
        "model": "resnet18",
        "pretrained": False,
        "epochs": 1,
        "batch-size": 64,
        "lr": 0.02,
        "image-size": size.image_size,
        "hflip": False,
        "workers": 0,
        "profile-interval": 0,
        "seed": 0,
    }
    return {
        "TrainingJobName": name,
        "HyperParameters": {k: json.dumps(v) for k, v in hyperparameters.items()},
        "AlgorithmSpecification": {
            "TrainingImage": "pytorch-training:local",
            "TrainingInputMode": mode,
            "MetricDefinitions": METRIC_DEFINITIONS,
        },
        "RoleArn": "arn:aws:iam::123456789012:role/bench-scale",
        "InputDataConfig": [
            {
                "ChannelName": split,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": mode,
            }
            for split, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://unused/jobs"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def watch_for_line(path: Path, text: str, found: dict[str, float], stop: threading.Event) -> None:
    """Note the wall time at which `text` first appears in the job's log file."""
    while not stop.is_set():
        with contextlib.suppress(OSError):
            if text in path.read_text(errors="replace"):
                found["at"] = time.perf_counter()
                return
        time.sleep(0.05)


def train(service: Any, sm: Any, name: str, request: dict[str, Any]) -> dict[str, Any]:
    """One job to its end; the times of its parts."""
    log_file = service.config.state_dir / "jobs" / name / "logs" / "training.log"
    found: dict[str, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_for_line, args=(log_file, SETUP_LINE, found, stop))
    started = time.perf_counter()
    sm.create_training_job(**request)
    watcher.start()
    while True:
        job = sm.describe_training_job(TrainingJobName=name)
        if job["TrainingJobStatus"] in {"Completed", "Failed", "Stopped"}:
            break
        time.sleep(0.5)
    whole = time.perf_counter() - started
    stop.set()
    watcher.join()
    if job["TrainingJobStatus"] != "Completed":
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.is_file() else ""
        raise RuntimeError(
            f"{name} ended {job['TrainingJobStatus']}: {job.get('FailureReason')}\n{tail}"
        )
    transitions = {t["Status"]: t for t in job.get("SecondaryStatusTransitions", [])}
    downloading = transitions.get("Downloading", {})
    channel_s = (
        (downloading["EndTime"] - downloading["StartTime"]).total_seconds()
        if downloading.get("EndTime")
        else None
    )
    history = output_history(service, name)
    return {
        "channel_setup_s": channel_s,
        "to_first_step_s": found["at"] - started if "at" in found else None,
        "epoch_s": history["epochs"][0]["seconds"],
        "job_s": whole,
        "train_accuracy": history["epochs"][0]["train"].get("accuracy"),
    }


def output_history(service: Any, name: str) -> dict[str, Any]:
    """history.json of the job's output (algo-1's output/data, as uploaded)."""
    folder = service.config.state_dir / "jobs" / name / "output" / "data"
    return json.loads((folder / "history.json").read_text())


def run_trainings(local: LocalS3, work: Path, channels: dict[str, str], size: Size) -> dict:

    from mlops.local.sagemaker.config import SageMakerConfig
    from mlops.local.sagemaker.service import LocalSageMakerService
    from mlops.packaging import pack_training_source

    local.s3.put_object(
        Bucket=local.artifacts_bucket,
        Key="code/bench/sourcedir.tar.gz",
        Body=pack_training_source(),
    )
    source = f"s3://{local.artifacts_bucket}/code/bench/sourcedir.tar.gz"
    config = SageMakerConfig(
        state_dir=work / "sagemaker",
        region=REGION,
        max_concurrent_jobs=1,
        aws_endpoint_urls={"s3": local.url, "logs": local.url, "cloudwatch": local.url},
    )
    service = LocalSageMakerService(config).start()
    try:
        sm = local_client("sagemaker", service.url)
        times = {}
        for mode in MODES:
            name = f"scale-{mode.lower()}"
            request = training_request(name, mode, channels, size, source)
            request["OutputDataConfig"]["S3OutputPath"] = f"s3://{local.artifacts_bucket}/jobs"
            log(f"{NAME}: training one epoch, {mode} mode")
            times[mode] = train(service, sm, name, request)
        return times
    finally:
        service.shutdown()


def run(settings: Settings) -> dict[str, Any]:
    size = size_for(settings.quick)
    work = settings.scratch(NAME)
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    started = time.perf_counter()
    images = write_dataset(data, size)
    made_s = time.perf_counter() - started
    megabytes = sum(p.stat().st_size for p in data.rglob("*.jpg")) / 1e6
    log(f"{NAME}: {images} images ({megabytes:.1f} MB) in {made_s:.0f} s; uploading")
    with (
        LocalS3() as local,
        environment({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}),
    ):
        from pipeline_common.naming import dataset_prefix

        dataset = "dogs-synthetic"
        upload_s, key = upload(local, data, dataset)
        log(f"{NAME}: uploaded in {upload_s:.0f} s; validating")
        validation_s, answer = validate(local, dataset, key)
        prefix = dataset_prefix(dataset)
        channels = {s: f"s3://{local.data_bucket}/{prefix}{s}/" for s in ("train", "valid", "test")}
        times = run_trainings(local, work, channels, size)
    measurements = {
        "images": images,
        "classes": size.classes,
        "megabytes": round(megabytes, 2),
        "upload_s": upload_s,
        "validation_s": validation_s,
        "validated_counts": answer["counts"],
        **{f"{mode.lower()}_{k}": v for mode, parts in times.items() for k, v in parts.items()},
    }
    checks = [info(f"{key}", value) for key, value in measurements.items() if key.endswith("_s")]
    notes = [
        "File: the Downloading status copies every object; FastFile: it only lists them, and "
        "train.py's scan of the splits (it decodes every image before the first step) fetches "
        "each object on its first open, so both modes have read the whole data set before the "
        "first step.",
        "Jobs run one after the other on the local SageMaker (1 epoch each); upload is one "
        "PutObject a file from this process.",
    ]
    return result(NAME, TITLE, checks, measurements, notes)
