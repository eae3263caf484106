"""Contract: train.py inside the SageMaker PyTorch training image, started as AWS starts it.

No emulator in between. The requests are the ones the Lambdas send (built with
pipeline_common's request builders, for a tuning trial and for the profiled retrain); a
folder is laid out from each request the way SageMaker lays out /opt/ml (input/config/
hyperparameters.json, resourceconfig.json, inputdataconfig.json, input/data/<channel>, the
source archive `mlops publish-training` uploads in code/) and the image's own entry point runs:
the real `sagemaker-training` toolkit's `train` with SAGEMAKER_TRAINING_MODULE of the PyTorch
image (sagemaker-pytorch-training), under Python 3.12 with the image's torch, numpy and
protobuf (.venv-image, `make image-venv`; versions in docs/training-image.md). The toolkit
renders the hyperparameters, installs the archive's requirements.txt and sets every SM_*
variable. The retrain gets no Debugger configuration at all, like every account opened
since 2026-07-30: its rule verdicts and system profile must come from the job itself.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / "functions" / "shared" / "python"
if str(SHARED) not in sys.path:  # the Lambda layer: the request builders the Lambdas use
    sys.path.insert(0, str(SHARED))

from pipeline_common import metrics  # noqa: E402
from pipeline_common.config import CommonSettings, TrainingSettings  # noqa: E402
from pipeline_common.training import build_training_request  # noqa: E402
from pipeline_common.tuning import build_tuning_request  # noqa: E402
from pipeline_report.profile import profile_from_job_output  # noqa: E402

from mlops.local.sagemaker.training_container import IMAGE_ENVIRONMENT  # noqa: E402  (Dockerfile ENV)
from mlops.packaging import pack_training_source  # noqa: E402
from tests.support.datasets import write_tiny_digits  # noqa: E402

pytestmark = pytest.mark.timeout(900)

IMAGE_VENV = REPO / ".venv-image"
TOOLKIT_TRAIN = IMAGE_VENV / "bin" / "train"
REGION = "us-east-1"
COMMON = CommonSettings("mlops", "mlops-data", "mlops-artifacts", REGION)
EXECUTION = "digits-contract"
OWN_RULES = {
    "LossNotDecreasing",
    "VanishingGradient",
    "PoorWeightInitialization",
    "Overfit",
    "Overtraining",
}


def training_settings() -> TrainingSettings:
    """Small and fast, otherwise the template's defaults; no Debugger in the account."""
    return TrainingSettings(
        role_arn="arn:aws:iam::123456789012:role/mlops-sagemaker",
        training_image="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-cpu-py312",
        instance_type="ml.m5.xlarge",
        epochs=2,
        image_size=16,
        models=["resnet18"],
        batch_sizes=[8],
        learning_rate_min=1e-3,
        learning_rate_max=1e-1,
        pretrained=False,
        use_spot_instances=False,
        max_runtime_seconds=3600,
        max_jobs=2,
        max_parallel_jobs=1,
        strategy="Bayesian",
        debugger_available=False,
        rule_evaluator_image="",
    )


def channel_uris() -> dict[str, str]:
    return {
        s: f"s3://{COMMON.data_bucket}/datasets/digits/{s}/" for s in ("train", "valid", "test")
    }


def trial_hyperparameters(tuning: dict[str, Any]) -> dict[str, str]:
    """What SageMaker hands one trial: the static values, one value per range (as listed, or
    a number inside the continuous range) and its own _tuning_objective_metric."""
    config = tuning["HyperParameterTuningJobConfig"]
    ranges = config["ParameterRanges"]
    chosen = {r["Name"]: r["Values"][0] for r in ranges["CategoricalParameterRanges"]}
    for item in ranges["ContinuousParameterRanges"]:
        low, high = math.log10(float(item["MinValue"])), math.log10(float(item["MaxValue"]))
        chosen[item["Name"]] = f"{10 ** ((low + high) / 2):.6g}"
    objective = config["HyperParameterTuningJobObjective"]["MetricName"]
    static = tuning["TrainingJobDefinition"]["StaticHyperParameters"]
    return {**static, **chosen, "_tuning_objective_metric": objective}


def lay_out(base: Path, request: dict[str, Any], digits: Path, source: bytes) -> None:
    """/opt/ml as SageMaker prepares it for `request` (one instance, File mode)."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(request["HyperParameters"]))
    instance = request["ResourceConfig"]["InstanceType"]
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": "algo-1",
                "current_instance_type": instance,
                "current_group_name": "homogeneousCluster",
                "hosts": ["algo-1"],
                "instance_groups": [
                    {
                        "instance_group_name": "homogeneousCluster",
                        "instance_type": instance,
                        "hosts": ["algo-1"],
                    }
                ],
                "network_interface_name": "eth0",
            }
        )
    )
    channels = {}
    for channel in request["InputDataConfig"]:
        name = channel["ChannelName"]
        channels[name] = {
            "TrainingInputMode": channel["InputMode"],
            "S3DistributionType": channel["DataSource"]["S3DataSource"]["S3DataDistributionType"],
            "RecordWrapperType": "None",
        }
        shutil.copytree(digits / name, base / "input" / "data" / name)
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    # What sagemaker_submit_directory names; the toolkit unpacks it into an empty code dir.
    with tarfile.open(fileobj=io.BytesIO(source), mode="r:gz") as archive:
        archive.extractall(base / "code", filter="data")
    for folder in ("model", "output/data"):
        (base / folder).mkdir(parents=True, exist_ok=True)


def run_toolkit(base: Path, job_name: str) -> subprocess.CompletedProcess[str]:
    """The container's start: `train` with nothing of this test's Python setup inherited."""
    env = {
        **IMAGE_ENVIRONMENT,
        "PATH": f"{IMAGE_VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "SAGEMAKER_BASE_DIR": str(base),
        "SM_STUDIO_LOCAL_MODE": "true",  # the toolkit's switch: no DNS wait for algo-1
        "TRAINING_JOB_NAME": job_name,
        "AWS_REGION": REGION,
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [str(TOOLKIT_TRAIN)], cwd=base, env=env, capture_output=True, text=True, timeout=800
    )


def script_command(log: str) -> str:
    """The command line the toolkit logs before it starts the script."""
    found = re.search(r"Invoking script with the following command:\s*\n\s*\n?(.+)", log)
    assert found, log[-3000:]
    return found.group(1)


@pytest.fixture(scope="module")
def image() -> Path:
    if not TOOLKIT_TRAIN.exists():
        pytest.fail(
            f"{TOOLKIT_TRAIN} is missing: build the image environment with `make image-venv`"
        )
    return IMAGE_VENV


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def trial(image: Path, digits: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tuning = build_tuning_request(
        job_name="mlops-digits-tune-contract",
        common=COMMON,
        training=training_settings(),
        dataset="digits",
        execution=EXECUTION,
        channel_uris=channel_uris(),
        metric_definitions=metrics.METRIC_DEFINITIONS,
        warm_start_parent=None,
    )
    definition = tuning["TrainingJobDefinition"]
    request = {
        "TrainingJobName": "mlops-digits-tune-contract-001-abcdef12",
        "HyperParameters": trial_hyperparameters(tuning),
        "InputDataConfig": definition["InputDataConfig"],
        "ResourceConfig": definition["ResourceConfig"],
    }
    base = tmp_path_factory.mktemp("trial")
    lay_out(base, request, digits, pack_training_source())
    done = run_toolkit(base, request["TrainingJobName"])
    return {"request": request, "base": base, "done": done, "log": done.stdout + done.stderr}


@pytest.fixture(scope="module")
def retrain(
    trial: dict[str, Any], digits: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    request = build_training_request(
        job_name="mlops-digits-retrain-contract",
        common=COMMON,
        training=training_settings(),
        dataset="digits",
        execution=EXECUTION,
        channel_uris=channel_uris(),
        metric_definitions=metrics.METRIC_DEFINITIONS,
        # DescribeTrainingJob's HyperParameters of the best trial, as find_best passes them on
        tuned_hyperparameters=trial["request"]["HyperParameters"],
        debugger=False,
    )
    base = tmp_path_factory.mktemp("retrain")
    lay_out(base, request, digits, pack_training_source())
    done = run_toolkit(base, request["TrainingJobName"])
    return {"request": request, "base": base, "done": done, "log": done.stdout + done.stderr}


def test_training_contract_image_environment(image: Path) -> None:
    """Python 3.12 with the image's majors: torch 2.6, numpy 2, protobuf 6 (upb backend)."""
    probe = (
        "import sys, torch, numpy, google.protobuf as p, sagemaker_training, "
        "sagemaker_pytorch_container; from google.protobuf.internal import api_implementation "
        "as a; print(sys.version_info[:2], torch.__version__, numpy.__version__, p.__version__, "
        "a.Type())"
    )
    # The image's own environment: importing train.py in this test process (other contract
    # tests do) sets PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION for train.py's sake only.
    env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
    out = subprocess.run(
        [str(image / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    assert out.startswith("(3, 12) 2.6."), out
    _, _, _torch, numpy_version, protobuf_version, backend = out.split()
    assert numpy_version.startswith("2.") and protobuf_version.startswith("6."), out
    assert backend == "upb"  # the image's default; train.py switches its own process only


def test_training_contract_trial_runs_through_the_toolkit(trial: dict[str, Any]) -> None:
    log = trial["log"]
    assert trial["done"].returncode == 0, log[-4000:]
    assert "Installing dependencies from requirements.txt" in log
    assert "Reporting training SUCCESS" in log
    assert (trial["base"] / "output" / "success").is_file()


def test_training_contract_trial_hyperparameters_rendered_by_the_toolkit(
    trial: dict[str, Any],
) -> None:
    """JSON-decoded values as arguments; SageMaker's own keys never reach the script."""
    command = script_command(trial["log"])
    assert "--model resnet18" in command and '"resnet18"' not in command
    assert "--pretrained false" in command and "--run-rules false" in command
    assert "--batch-size 8" in command and "--epochs 2" in command
    assert "_tuning_objective_metric" not in command and "sagemaker_" not in command


def test_training_contract_trial_metric_lines_match_the_published_regexes(
    trial: dict[str, Any],
) -> None:
    for definition in metrics.METRIC_DEFINITIONS:
        assert re.search(definition["Regex"], trial["log"]), definition


def test_training_contract_trial_model_and_outputs(trial: dict[str, Any]) -> None:
    model = trial["base"] / "model"
    info = json.loads((model / "model_info.json").read_text())
    assert info["training_job"] == trial["request"]["TrainingJobName"]
    assert (model / "model.pth").is_file() and (model / "code" / "inference.py").is_file()
    output = trial["base"] / "output" / "data"
    assert (output / "history.json").is_file()
    assert (output / metrics.CONFUSION_FILE).is_file()  # train.py's test pass, for the report
    assert not (output / "rule_statuses.json").exists()  # trials do not run the rules
    assert (output / "profiler" / "system-metrics.json").stat().st_size > 0
    # Grad-CAM from the captum in the source archive (not pip's: it declares numpy<2.0), on
    # the image's numpy 2 and torch 2.6; the model's code/ carries it on for the endpoint
    index = json.loads((output / "explanations" / "index.json").read_text())
    assert "error" not in index, index["error"]
    assert index["method"] == "Grad-CAM" and index["images"]
    assert all((output / entry["file"]).is_file() for entry in index["images"])
    assert (model / "code" / "explain.py").is_file()
    assert (model / "code" / "captum" / "attr" / "__init__.py").is_file()


def test_training_contract_retrain_request_has_no_debugger_members(
    retrain: dict[str, Any],
) -> None:
    request = retrain["request"]
    for member in ("DebugHookConfig", "ProfilerConfig", "DebugRuleConfigurations"):
        assert member not in request
    assert not (retrain["base"] / "input" / "config" / "debughookconfig.json").exists()


def test_training_contract_retrain_without_debugger_gives_real_rule_verdicts(
    retrain: dict[str, Any],
) -> None:
    """The acceptance line: no Debugger configuration from SageMaker, still every rule judged
    from the job's own tensors (not Error), read the way evaluate_rules reads them."""
    log = retrain["log"]
    assert retrain["done"].returncode == 0, log[-4000:]
    assert "debug hook from debug_hook.json (no hook config from SageMaker)" in log
    # Tensors where Debugger would put them (/opt/ml/output/tensors), not in output.tar.gz.
    assert (retrain["base"] / "output" / "tensors" / "index").is_dir()
    output = retrain["base"] / "output" / "data"
    assert not (output / "tensors").exists()
    archive = tar_of(output)
    evaluate = load_lambda("evaluate_rules")
    statuses = evaluate.statuses_from_output(archive, "s3://x/output.tar.gz")
    assert {s.rule for s in statuses} == OWN_RULES
    assert all(s.source == "job" for s in statuses)
    errors = [
        (s.rule, s.details) for s in statuses if s.status not in ("NoIssuesFound", "IssuesFound")
    ]
    assert errors == []


def test_training_contract_retrain_without_profiler_has_a_system_profile(
    retrain: dict[str, Any],
) -> None:
    """The report's system profile, read from the job's output.tar.gz as on AWS."""
    assert retrain["done"].returncode == 0, retrain["log"][-4000:]
    job = {
        "TrainingJobName": retrain["request"]["TrainingJobName"],
        "ModelArtifacts": {
            "S3ModelArtifacts": f"{retrain['request']['OutputDataConfig']['S3OutputPath']}"
            f"{retrain['request']['TrainingJobName']}/output/model.tar.gz"
        },
    }
    output_uri = job["ModelArtifacts"]["S3ModelArtifacts"].replace("model.tar.gz", "output.tar.gz")
    bucket, key = output_uri.removeprefix("s3://").split("/", 1)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=key, Body=tar_of(retrain["base"] / "output" / "data"))
        profile = profile_from_job_output(s3, job)
    assert profile is not None
    assert len(profile.times_s) >= 2
    assert all(0.0 <= value <= 100.0 for value in profile.cpu_percent)
    assert profile.memory_percent and all(0.0 < v <= 100.0 for v in profile.memory_percent)


def tar_of(folder: Path) -> bytes:
    """output.tar.gz as SageMaker makes it from /opt/ml/output/data."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=".")
    return buffer.getvalue()


def load_lambda(name: str) -> Any:
    """A Lambda's app.py as the runtime loads it (its module-level clients need a region)."""
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    spec = importlib.util.spec_from_file_location(
        f"contract_{name}", REPO / "functions" / name / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- two instances: the retrain with TrainingInstanceCount=2 ---------------------------------

HOSTS = ["algo-1", "algo-2"]


def start_toolkit(base: Path, job_name: str, network: dict[str, str]) -> subprocess.Popen[str]:
    """One host's container start, as `run_toolkit`, plus the one stand-in for the cluster's
    network (algo-1 and port 7777 on 127.0.0.1: the local SageMaker's LocalNetwork shim)."""
    env = {
        **IMAGE_ENVIRONMENT,
        "PATH": f"{IMAGE_VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "SAGEMAKER_BASE_DIR": str(base),
        "SM_STUDIO_LOCAL_MODE": "true",
        "TRAINING_JOB_NAME": job_name,
        "AWS_REGION": REGION,
        "OMP_NUM_THREADS": "1",
    }
    env.update(network)  # PATH: the shim first, then the image's PATH as above
    return subprocess.Popen(
        [str(TOOLKIT_TRAIN)],
        cwd=base,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def two_hosts(
    image: Path, digits: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The profiled retrain with TrainingInstanceCount=2: two /opt/ml trees, two toolkits."""
    import dataclasses
    import signal

    from mlops.local.sagemaker.training_container import LocalNetwork

    request = build_training_request(
        job_name="mlops-digits-retrain-two-hosts",
        common=COMMON,
        training=dataclasses.replace(training_settings(), instance_count=2),
        dataset="digits",
        execution=EXECUTION,
        channel_uris=channel_uris(),
        metric_definitions=metrics.METRIC_DEFINITIONS,
        tuned_hyperparameters={"model": '"resnet18"', "batch-size": "8", "lr": "0.01"},
        debugger=False,
    )
    root = tmp_path_factory.mktemp("two-hosts")
    network = LocalNetwork(root / "network", HOSTS, str(image / "bin" / "python"))
    environment = network.toolkit_environment(f"{image / 'bin'}:/usr/local/bin:/usr/bin:/bin")
    bases, processes = {}, {}
    try:
        for host in HOSTS:
            base = bases[host] = root / host
            lay_out(base, request, digits, pack_training_source())
            config = base / "input" / "config" / "resourceconfig.json"
            resource = json.loads(config.read_text())
            resource["current_host"], resource["hosts"] = host, HOSTS
            resource["instance_groups"][0]["hosts"] = HOSTS
            config.write_text(json.dumps(resource))
            processes[host] = start_toolkit(base, request["TrainingJobName"], environment)
        logs = {host: process.communicate(timeout=800)[0] for host, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return {
        "request": request,
        "bases": bases,
        "codes": {host: process.returncode for host, process in processes.items()},
        "logs": logs,
    }


def test_training_contract_two_hosts_run_torchrun_through_the_toolkit(
    two_hosts: dict[str, Any],
) -> None:
    logs = two_hosts["logs"]
    assert two_hosts["request"]["ResourceConfig"]["InstanceCount"] == 2
    assert two_hosts["request"]["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert two_hosts["codes"] == {"algo-1": 0, "algo-2": 0}, (
        logs["algo-1"][-3000:] + logs["algo-2"][-3000:]
    )
    for rank, host in enumerate(HOSTS):
        assert "Invoking TorchDistributed" in logs[host]
        command = (
            "torchrun --nnodes 2 --nproc_per_node 1 --master_addr algo-1 --master_port 7777 "
            f"--node_rank {rank} train.py"
        )
        assert command in logs[host]
        assert f"[worker] rank={rank} world_size=2 host={host} backend=gloo" in logs[host]


def test_training_contract_two_hosts_metric_lines_and_outputs_come_from_rank_0(
    two_hosts: dict[str, Any],
) -> None:
    first, second = (two_hosts["logs"][host] for host in HOSTS)
    for definition in metrics.METRIC_DEFINITIONS:
        assert len(re.findall(definition["Regex"], first)) == (
            1 if definition["Name"].startswith("test:") else 2
        ), definition
    assert metrics.parse_metrics(second) == {}
    one, two = (two_hosts["bases"][host] for host in HOSTS)
    assert (one / "model" / "model.pth").is_file()
    assert not any((two / "model").iterdir())
    assert sorted(p.name for p in (two / "output" / "data").iterdir()) == []
    history = json.loads((one / "output" / "data" / "history.json").read_text())
    assert [epoch["processes"] for epoch in history["epochs"]] == [2, 2]
    # 60 training images, batch 8: 8 steps alone, 4 for each of the two processes.
    for rank, log in enumerate((first, second)):
        assert re.findall(rf"\[worker\] rank={rank} split=train steps=(\d+)", log) == ["4", "4"]


def test_training_contract_two_hosts_rules_judge_rank_0s_tensors(
    two_hosts: dict[str, Any],
) -> None:
    one = two_hosts["bases"]["algo-1"]
    assert (one / "output" / "tensors" / "index").is_dir()
    assert not (two_hosts["bases"]["algo-2"] / "output" / "tensors").exists()
    evaluate = load_lambda("evaluate_rules")
    statuses = evaluate.statuses_from_output(tar_of(one / "output" / "data"), "s3://x/o.tar.gz")
    assert {s.rule for s in statuses} == OWN_RULES
    errors = [
        (s.rule, s.details) for s in statuses if s.status not in ("NoIssuesFound", "IssuesFound")
    ]
    assert errors == []
