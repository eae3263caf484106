"""The whole pipeline on the local cloud: real trigger, Lambdas, trainings, rules, endpoint, API.

One local cloud serves the module; the tests run in order and build on each other (a first
model is deployed, a second updates the endpoint under load, a third is rejected). Everything
the cloud started is stopped at the end, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
from pipeline_common.records import REPORT, record_key
from pipeline_report import executions as ex

from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.models import lineage, list_versions, rollback
from mlops.runs import follow, upload_dataset
from mlops.sample_data import write_digits
from mlops.target import local_target
from tests.support import EVENTS
from tests.support.datasets import upload_broken_dataset
from tests.support.runs import state_names, tiny_run, wait_for_state

# Small enough for a 2-core machine: 2 trials of 6 epochs on 16-pixel digits, then a retrain.
# One epoch from scratch is at chance level; six reach about 90 %, so the accuracy gate below
# separates a real model from one whose test labels were shuffled.
E2E_PARAMETERS = tiny_run(
    max_jobs=2,
    epochs=6,
    min_test_accuracy="0.5",
    regression_tolerance="0.5",
    # The endpoint update test keeps 8 requests in flight without a single error (about 47/s on
    # an idle machine): on AWS the usage plan (20/s, burst 40 by default) would throttle that,
    # so the user raises it at deploy time, as here (API Gateway's account-level defaults).
    ApiRateLimit="10000",
    ApiBurstLimit="5000",
)
PER_CLASS = 30
# Threads posting during an endpoint update, each with one request in flight at a time.
SENDERS = 8
EXECUTION_TIMEOUT_S = 900

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-cloud")
    process, info = start_cloud_process(root, parameters=E2E_PARAMETERS)
    try:
        yield root, info
    finally:
        stop_cloud_process(process)


@pytest.fixture(scope="module")
def target(cloud):
    root, _ = cloud
    return local_target(root)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data") / "digits"
    write_digits(directory, max_per_class=PER_CLASS, seed=1)
    return directory


def run_pipeline(target, directory: Path, name: str) -> ex.ExecutionView:
    execution = upload_dataset(target, directory, name)
    sfn = target.client("stepfunctions")
    return follow(sfn, execution["executionArn"], poll_s=1.0, timeout_s=EXECUTION_TIMEOUT_S)


def post_image(target, image: Path) -> requests.Response:
    return requests.post(
        f"{target.api_url}/predict",
        data=image.read_bytes(),
        headers={"Content-Type": "image/png", "x-api-key": target.api_key},
        timeout=30,
    )


def endpoint_config(target) -> str:
    endpoint = target.output("EndpointName")
    return target.client("sagemaker").describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]


def test_e2e_cloud_enforces_the_templates_iam_roles(cloud):
    """The runs below (a create, then a blue/green update that reads the serving config's
    tags) succeed with every Lambda's calls authorised against its role in template.yaml."""
    _, info = cloud
    assert info.iam_enforced


def test_e2e_pipeline_trains_deploys_and_answers_over_http(target, digits):
    view = run_pipeline(target, digits, "digits-a")

    assert view.status == "SUCCEEDED", f"{view.error}: {view.cause}"
    names = state_names(view)
    for state in (
        "ValidateDataset",
        "StartTuning",
        "CheckTuning",
        "FindBest",
        "StartProfiledTraining",
        "CheckTraining",
        "EvaluateRules",
        "RegisterModel",
        "DeployEndpoint",
        "CheckEndpoint",
        "SmokeTest",
    ):
        assert state in names, f"{state} did not run: {names}"
    # The endpoint serves the version the run registered, and `mlops models` says so.
    registered = read_record(target, view.name, "model_package.json")
    deployed = read_record(target, view.name, "deployment.json")
    assert registered["approval_status"] == "Approved"
    assert deployed["model_package_arn"] == registered["model_package_arn"]
    [version] = list_versions(target, "digits-a")
    assert (version.arn, version.status, version.serving) == (
        registered["model_package_arn"],
        "Approved",
        True,
    )
    assert version.execution == view.name and float(version.test_accuracy) > 0
    chain = {link.kind: link for link in lineage(target, "digits-a", version.version)}
    assert chain["execution"].name == view.name
    assert chain["training job"].name == deployed["training_job_name"]
    assert chain["endpoint config"].name == deployed["endpoint_config_name"]
    assert chain["endpoint"].detail == "serves it now"
    assert names.index("FindBest") < names.index("EvaluateRules") < names.index("DeployEndpoint")

    sagemaker = target.client("sagemaker")
    tuning = sagemaker.list_hyper_parameter_tuning_jobs(NameContains="digits-a")
    [job] = tuning["HyperParameterTuningJobSummaries"]
    assert chain["tuning job"].name == job["HyperParameterTuningJobName"]
    trials = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=job["HyperParameterTuningJobName"]
    )["TrainingJobSummaries"]
    assert len(trials) == 2

    image = next((digits / "test" / "003.three").iterdir())
    response = post_image(target, image)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["class_name"].startswith(f"{answer['class_index']:03d}.")
    assert len(answer["top_k"]) >= 1


def test_e2e_duplicate_trigger_event_starts_no_second_execution(target):
    s3 = target.client("s3")
    key = "datasets/digits-a/manifest.json"
    head = s3.head_object(Bucket=target.data_bucket, Key=key)
    # The event S3 sent for that upload, delivered again: AWS's own sample (tests/events) with
    # this object's bucket, URL-encoded key, size, ETag and version (the bucket is versioned).
    event = json.loads((EVENTS / "s3_manifest_created.json").read_text())
    record = event["Records"][0]
    record["s3"]["bucket"].update(name=target.data_bucket, arn=f"arn:aws:s3:::{target.data_bucket}")
    record["s3"]["object"].update(
        key=key.replace("/", "%2F"),
        size=head["ContentLength"],
        eTag=head["ETag"].strip('"'),
        versionId=head["VersionId"],
    )
    sfn = target.client("stepfunctions")
    before = ex.list_executions(sfn, target.state_machine_arn)
    trigger = target.output("TriggerFunctionName")
    for _ in range(2):  # S3 delivers at least once: the same event again
        response = target.client("lambda").invoke(FunctionName=trigger, Payload=json.dumps(event))
        assert "FunctionError" not in response, response["Payload"].read()
    after = ex.list_executions(sfn, target.state_machine_arn)
    assert [e["name"] for e in after] == [e["name"] for e in before]


@dataclass
class Answer:
    at: float  # seconds since the senders started
    status: int
    model: str  # the training job whose model answered ("" for an error)
    sender: int = 0  # which thread sent it: each thread's requests are sequential


class Senders:
    """Threads posting one image in a loop, recording which model answered each request."""

    def __init__(self, target, image: Path, threads: int) -> None:
        self.target, self.image = target, image
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.send, args=(index,), daemon=True)
            for index in range(threads)
        ]
        self.started = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> Senders:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        self.elapsed = time.monotonic() - self.started

    def send(self, sender: int) -> None:
        while not self.stop.is_set():
            response = post_image(self.target, self.image)
            at = time.monotonic() - self.started
            model = response.json().get("model", "") if response.status_code == 200 else ""
            self.answers.append(Answer(at, response.status_code, model, sender))
            if response.status_code != 200:
                self.failures.append(f"{at:.1f}s {response.status_code} {response.text[:200]}")


def models_seen_by_each_sender(answers: list[Answer]) -> set[tuple[str, ...]]:
    """Each sender's models in the order it saw them, repeats folded: ("old", "new") means it
    switched once and never went back. Requests of different senders overlap, so the order of
    their completions says nothing about routing; one sender's sequential requests do."""
    seen: dict[int, list[str]] = {}
    for answer in sorted(answers, key=lambda a: a.at):
        models = seen.setdefault(answer.sender, [])
        if not models or models[-1] != answer.model:
            models.append(answer.model)
    return {tuple(models) for models in seen.values()}


def serving_phases(answers: list[Answer]) -> list[dict]:
    """Consecutive runs of answers from the same model, in time order: the update's report."""
    phases: list[dict] = []
    for answer in sorted(answers, key=lambda a: a.at):
        if phases and phases[-1]["model"] == answer.model:
            phases[-1].update(last_s=round(answer.at, 2), requests=phases[-1]["requests"] + 1)
        else:
            phases.append(
                {
                    "model": answer.model,
                    "first_s": round(answer.at, 2),
                    "last_s": round(answer.at, 2),
                    "requests": 1,
                }
            )
    return phases


def test_e2e_endpoint_update_under_load_drops_no_request(target, digits, tmp_path):
    """8 requests always in flight through the API from the gate to the end of the run: none
    fails, and each model answers at least one round of them (the rate is reported, not
    gated: it is the machine's speed, which bench/api_load.py measures)."""
    image = next((digits / "test" / "007.seven").iterdir())
    config_before = endpoint_config(target)
    model_before = post_image(target, image).json()["model"]
    second = tmp_path / "digits-b"
    shutil.copytree(digits, second)
    execution = upload_dataset(target, second, "digits-b")
    sfn = target.client("stepfunctions")
    # From the gate on (training is over, so the senders do not slow it): the whole update.
    wait_for_state(target, execution["executionArn"], "EvaluateRules", EXECUTION_TIMEOUT_S)

    with Senders(target, image, threads=SENDERS) as senders:
        view = follow(sfn, execution["executionArn"], poll_s=1.0, timeout_s=EXECUTION_TIMEOUT_S)
    phases = serving_phases(senders.answers)
    rate = len(senders.answers) / senders.elapsed
    report = {
        "requests": len(senders.answers),
        "seconds": round(senders.elapsed, 1),
        "requests_per_s": round(rate, 1),
        "failed": len(senders.failures),
        "phases": phases,
    }
    (tmp_path / "update_phases.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))  # the update's report: which model served when

    assert view.status == "SUCCEEDED", f"{view.error}: {view.cause}"
    deployed = read_record(target, view.name, "deployment.json")
    assert endpoint_config(target) == deployed["endpoint_config_name"] != config_before
    assert senders.failures == []
    assert all(phase["requests"] >= SENDERS for phase in (phases[0], phases[-1])), report
    new_model = deployed["training_job_name"]
    # old model, then new, never back: for every sender (concurrent requests in flight at the
    # switch may complete in either order, so the merged timeline can interleave for a moment).
    # A sender whose first request came after the switch saw only the new one (on a loaded
    # machine the senders start late); at least one saw the switch itself.
    seen = models_seen_by_each_sender(senders.answers)
    assert seen <= {(model_before, new_model), (new_model,)}, report
    assert (model_before, new_model) in seen, report
    assert phases[0]["model"] == model_before and phases[-1]["model"] == new_model, report


def test_e2e_rollback_puts_the_previous_version_back_under_load(target, digits, tmp_path):
    """`mlops rollback` after digits-b replaced digits-a: digits-a's registered version serves
    again through the same blue/green deploy states, and no request fails meanwhile."""
    image = next((digits / "test" / "007.seven").iterdir())
    [previous] = list_versions(target, "digits-a")
    [current] = list_versions(target, "digits-b")
    assert (previous.serving, current.serving) == (False, True)
    model_before = post_image(target, image).json()["model"]

    with Senders(target, image, threads=SENDERS) as senders:
        arn, package = rollback(target)
        view = follow(
            target.client("stepfunctions"), arn, poll_s=1.0, timeout_s=EXECUTION_TIMEOUT_S
        )
    rate = len(senders.answers) / senders.elapsed
    report = {"requests": len(senders.answers), "requests_per_s": round(rate, 1)}

    assert view.status == "SUCCEEDED", f"{view.error}: {view.cause}"
    assert package["ModelPackageArn"] == previous.arn
    assert "ValidateDataset" not in state_names(view)  # no training: the deploy states only
    assert senders.failures == [], report
    [previous] = list_versions(target, "digits-a")
    assert previous.serving
    model_after = post_image(target, image).json()["model"]
    assert model_after != model_before
    assert models_seen_by_each_sender(senders.answers) == {(model_before, model_after)}, report


def read_record(target, execution: str, name: str) -> dict:
    s3 = target.client("s3")
    key = f"runs/{execution}/{name}"
    return json.loads(s3.get_object(Bucket=target.artifacts_bucket, Key=key)["Body"].read())


def test_e2e_gate_rejection_leaves_the_endpoint_unchanged(target, digits, tmp_path):
    """Test labels moved to the next class: the model cannot reach the accuracy threshold."""
    shuffled = tmp_path / "digits-shuffled"
    shutil.copytree(digits, shuffled)
    classes = sorted(p.name for p in (shuffled / "test").iterdir())
    moves = [
        (image, classes[(classes.index(image.parent.name) + 1) % len(classes)])
        for image in sorted((shuffled / "test").rglob("*.png"))
    ]
    for image, wrong in moves:  # every class keeps its count: the data set stays valid
        image.rename(shuffled / "test" / wrong / f"x{image.name}")
    config_before = endpoint_config(target)

    view = run_pipeline(target, shuffled, "digits-shuffled")

    assert view.status == "FAILED"
    assert "ModelRejected" in state_names(view)
    assert "DeployEndpoint" not in state_names(view)
    assert endpoint_config(target) == config_before
    [version] = list_versions(target, "digits-shuffled")  # registered, as Rejected
    assert (version.status, version.serving) == ("Rejected", False)
    # Its report (WriteReport, no endpoint call) still shows the retrain's test pass.
    html = (
        target.client("s3")
        .get_object(Bucket=target.artifacts_bucket, Key=record_key(view.name, REPORT))["Body"]
        .read()
        .decode()
    )
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    confusion = json.loads(data.group(1).replace("<\\/", "</"))["confusion"]
    assert confusion["images"] == sum(map(sum, confusion["matrix"])) > 0
    assert len(confusion["labels"]) == len(classes)
    assert 'data-plot="confusion_matrix"' in html


def test_e2e_broken_data_set_fails_in_validation_before_any_training(target, digits, tmp_path):
    execution = upload_broken_dataset(target, digits, tmp_path)  # no valid split
    sfn = target.client("stepfunctions")
    assert json.loads(execution["input"])["dataset"] == "broken", execution["input"]
    view = follow(sfn, execution["executionArn"], poll_s=1.0, timeout_s=120)

    assert view.status == "FAILED"
    assert view.error == "DatasetInvalid"
    assert "valid" in (view.cause or "")
    assert "StartTuning" not in state_names(view)
    tuning = target.client("sagemaker").list_hyper_parameter_tuning_jobs(NameContains="broken")
    assert tuning["HyperParameterTuningJobSummaries"] == []


def test_e2e_official_clients_read_the_local_cloud(cloud, target, monkeypatch):
    """The aws CLI and the sagemaker SDK's resource classes read what the pipeline created."""
    _, info = cloud
    env = {**os.environ, **info.client_env()}
    aws = str(Path(sys.executable).parent / "aws")  # awscli, installed beside the tests
    listed = subprocess.run(
        [aws, "stepfunctions", "list-executions", "--state-machine-arn", target.state_machine_arn],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = [e["name"] for e in json.loads(listed.stdout)["executions"]]
    assert any(name.startswith("digits-a") for name in names)

    sagemaker = target.client("sagemaker")
    [job] = sagemaker.list_hyper_parameter_tuning_jobs(NameContains="digits-a")[
        "HyperParameterTuningJobSummaries"
    ]
    tuning_name = job["HyperParameterTuningJobName"]
    trials = subprocess.run(
        [
            aws,
            "sagemaker",
            "list-training-jobs-for-hyper-parameter-tuning-job",
            "--hyper-parameter-tuning-job-name",
            tuning_name,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(json.loads(trials.stdout)["TrainingJobSummaries"]) == 2

    from sagemaker.core import resources

    for key, value in info.client_env().items():
        monkeypatch.setenv(key, value)
    session = boto3.Session(region_name=info.region)
    tuning = resources.HyperParameterTuningJob.get(tuning_name, session=session, region=info.region)
    best_name = tuning.best_training_job.training_job_name
    best = resources.TrainingJob.get(best_name, session=session, region=info.region)
    endpoint = resources.Endpoint.get(
        target.output("EndpointName"), session=session, region=info.region
    )
    assert tuning.hyper_parameter_tuning_job_status == "Completed"
    assert best.training_job_status == "Completed"
    assert endpoint.endpoint_status == "InService"

    # Every version the runs above registered (approved, rejected, in three groups), as the
    # aws CLI lists them and as the SDK's ModelPackage reads them, metadata and metrics included.
    groups = subprocess.run(
        [aws, "sagemaker", "list-model-package-groups", "--name-contains", "mlops-"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    group_names = [
        g["ModelPackageGroupName"]
        for g in json.loads(groups.stdout)["ModelPackageGroupSummaryList"]
    ]
    assert {"mlops-digits-a-models", "mlops-digits-b-models"} <= set(group_names)
    read = 0
    for group in group_names:
        listed = subprocess.run(
            [aws, "sagemaker", "list-model-packages", "--model-package-group-name", group],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        for summary in json.loads(listed.stdout)["ModelPackageSummaryList"]:
            package = resources.ModelPackage.get(
                summary["ModelPackageArn"], session=session, region=info.region
            )
            assert package.model_approval_status in {"Approved", "Rejected"}
            assert package.customer_metadata_properties["execution"]
            assert package.model_metrics.model_quality.statistics.s3_uri.endswith("gate.json")
            read += 1
    assert read >= 3
