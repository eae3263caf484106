"""The console's lineage pages: model versions, and one page per element of a version's chain.

`mlops console` links every element of data set version -> execution -> tuning job ->
training job -> model package version -> endpoint config -> endpoint to a page here (the
execution's is console.py's). The chain and its addresses are pipeline_report.lineage's (the
run report and `mlops lineage` use the same), the version list is mlops.models' (`mlops
models`), so the console restates no fact. Each page shows what the describe call answered,
the answer itself as JSON, and links onward.

Each page function returns (title, body HTML); console.py wraps and serves it. A name that
names nothing raises LookupError (the console answers 404 with its message); every name and
value is escaped, since data set names, reasons and tags come from users.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pipeline_common.aws import error_code, error_message
from pipeline_common.naming import execution_name, manifest_key, manifest_version_token
from pipeline_common.records import DEPLOYMENT, REGISTRATION
from pipeline_report.lineage import (
    Link,
    lineage_html,
    link_url,
    model_package_of,
    package_lineage,
    package_link,
    serving_package,
)
from pipeline_report.records import read_record
from pipeline_report.render import badge, fmt, table

from mlops.models import find_version, list_versions
from mlops.runs import CliError
from mlops.target import Target

Page = tuple[str, str]  # title, body HTML
NOT_FOUND = {"ValidationException", "ResourceNotFound", "NoSuchKey", "NotFound", "404"}
MAX_JSON_CHARS = 40_000
MONITORING_LINK = '<a id="monitoring-link" href="/monitoring">drift checks of its traffic</a>'


# -- pieces ---------------------------------------------------------------------------------------
def described(what: str, name: str, call: Callable[..., dict[str, Any]], **kwargs: Any) -> Any:
    """A describe call whose "no such resource" answer becomes a LookupError naming it (the
    console's 404), while any other failure stays an AWS error (the console's 502)."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        if error_code(exc) in NOT_FOUND:
            raise LookupError(
                f"No {what} {name}: {error_message(exc) or error_code(exc)}"
            ) from None
        raise


def linked(link: Link) -> str:
    """A name as a link to its console page (plain when it has none)."""
    url = link_url(link, None)
    name = f"<code>{escape(link.name)}</code>"
    return f'<a href="{escape(url)}">{name}</a>' if url else name


def json_block(answer: Any, label: str) -> str:
    """The describe call's whole answer, for what the page does not pick out."""
    text = json.dumps(answer, indent=2, default=str)
    if len(text) > MAX_JSON_CHARS:
        text = text[:MAX_JSON_CHARS] + "\n... (cut)"
    return (
        f'<details id="answer"><summary>{escape(label)} (JSON)</summary>'
        f"<pre>{escape(text)}</pre></details>"
    )


def facts(rows: list[tuple[str, str]]) -> str:
    """A two-column table; the values are HTML already (escaped by the caller)."""
    return table(["", ""], [[escape(k), v] for k, v in rows])


def _without_metadata(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


# -- model versions -------------------------------------------------------------------------------
def models_page(target: Target) -> Page:
    """Every version of every model package group of the project, newest first (`mlops models`)."""
    versions = list_versions(target, None)
    rows, attrs = [], []
    for v in versions:
        accuracy = fmt(float(v.test_accuracy)) if v.test_accuracy else "-"
        rows.append(
            [
                "&#9733; serves" if v.serving else "",
                escape(v.group),
                linked(package_link(v.arn, group=v.group)),
                badge(v.status),
                accuracy,
                escape(v.created),
                escape(v.manifest_version or "-"),
                linked(Link("execution", v.execution or "?")),
            ]
        )
        attrs.append(
            f'data-version="{escape(v.group)}/{v.version}" data-status="{escape(v.status)}" '
            f'data-serving="{str(v.serving).lower()}"'
        )
    headers = ["", "Group", "Version", "Status", "Test accuracy", "Created", "Data set version"]
    body = "<h1>Model versions</h1>" + (
        table([*headers, "Execution"], rows, attrs)
        if rows
        else "<p>No model versions yet: each run that reaches the gate registers one.</p>"
    )
    return "Model versions", body


def version_page(target: Target, group: str, version: str) -> Page:
    """One version: status, test accuracy, metadata, metrics and its lineage."""
    try:
        package = find_version(target.client("sagemaker"), group, int(version))
    except (CliError, ValueError) as exc:
        raise LookupError(f"No model package version {group}/{version}: {exc}") from None
    metadata = package.get("CustomerMetadataProperties", {})
    status = package.get("ModelApprovalStatus", "?")
    quality = [
        [escape(section), escape(kind), f"<code>{escape(str(spec.get('S3Uri', '-')))}</code>"]
        for section, statistics in (package.get("ModelMetrics") or {}).items()
        for kind, spec in statistics.items()
        if isinstance(spec, dict)
    ]
    chain = package_lineage(target, package)
    serves = any(link.kind == "endpoint" and link.detail == "serves it now" for link in chain)
    body = [
        f"<h1>Model package {escape(group)}/{escape(version)} {badge(status)}</h1>",
        f'<p class="muted">{escape(package["ModelPackageArn"])}</p>',
        facts(
            [
                ("Test accuracy", escape(metadata.get("test-accuracy", "-"))),
                ("Created", escape(str(package.get("CreationTime", "-")))),
                ("Approval", escape(package.get("ApprovalDescription") or "-")),
                ("Description", escape(package.get("ModelPackageDescription") or "-")),
                *([("Monitoring", MONITORING_LINK)] if serves else []),
            ]
        ),
        "<h2>Lineage</h2>",
        lineage_html(chain, None),
        "<h2>Metadata (CustomerMetadataProperties)</h2>",
        table(["Key", "Value"], [[escape(k), escape(v)] for k, v in sorted(metadata.items())]),
        "<h2>Model metrics</h2>",
        table(["Metric", "Statistics", "S3 URI"], quality),
        json_block(_without_metadata(package), "DescribeModelPackage"),
    ]
    return f"Model package {group}/{version}", "".join(body)


def run_lineage_section(target: Target, execution: str) -> str:
    """For an execution's page: the lineage of the version it registered (or, for `mlops deploy`
    and `mlops rollback`, deployed); empty when it has neither."""
    try:
        registered = read_record(target, execution, REGISTRATION) or {}
        deployed = read_record(target, execution, DEPLOYMENT) or {}
    except (ClientError, BotoCoreError) as exc:  # the rest of the page still shows
        return (
            f'<p class="error">No lineage: the run records cannot be read: {escape(str(exc))}</p>'
        )
    arn = registered.get("model_package_arn") or deployed.get("model_package_arn")
    if not arn:
        return ""
    what = "registered" if registered.get("model_package_arn") else "deployed"
    try:
        package = target.client("sagemaker").describe_model_package(ModelPackageName=arn)
        chain = lineage_html(package_lineage(target, package), None)
    except (ClientError, BotoCoreError) as exc:
        chain = f'<p class="error">No lineage for {escape(arn)}: {escape(str(exc))}</p>'
    return f'<h2>Lineage of the version this run {what}</h2><div id="run-lineage">{chain}</div>'


# -- the chain's other elements -------------------------------------------------------------------
def dataset_page(target: Target, name: str) -> Page:
    """A data set's manifest: every version S3 keeps, each with the run it started (the
    trigger names a run after the manifest version, so the name is computed, not searched)."""
    s3, bucket, key = target.client("s3"), target.data_bucket, manifest_key(name)
    current = described(
        "data set", f"{name} (s3://{bucket}/{key})", s3.head_object, Bucket=bucket, Key=key
    )
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    versions = [v for v in listed if v["Key"] == key] or [
        {**current, "IsLatest": True, "VersionId": current.get("VersionId")}
    ]
    rows = []
    for v in versions:
        token = manifest_version_token(v.get("VersionId"), v.get("ETag")) or "?"
        rows.append(
            [
                f"<code>{escape(token)}</code>" + (" (current)" if v.get("IsLatest") else ""),
                escape(str(v.get("LastModified", "-"))),
                linked(Link("execution", execution_name(name, token))),
            ]
        )
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read() or b"null")
    body = (
        f"<h1>Data set {escape(name)}</h1>"
        f'<p class="muted">Manifest <code>s3://{escape(bucket)}/{escape(key)}</code></p>'
        "<h2>Manifest versions</h2>"
        + table(["Version", "Uploaded", "The run it started"], rows)
        + json_block(manifest, "The current manifest.json")
    )
    return f"Data set {name}", body


def tuning_job_page(target: Target, name: str) -> Page:
    sagemaker = target.client("sagemaker")
    job = described(
        "tuning job",
        name,
        sagemaker.describe_hyper_parameter_tuning_job,
        HyperParameterTuningJobName=name,
    )
    best = (job.get("BestTrainingJob") or {}).get("TrainingJobName")
    objective = job.get("HyperParameterTuningJobConfig", {}).get(
        "HyperParameterTuningJobObjective", {}
    )
    counters = job.get("TrainingJobStatusCounters", {})
    body = (
        f"<h1>Tuning job {escape(name)} {badge(job.get('HyperParameterTuningJobStatus'))}</h1>"
        + facts(
            [
                (
                    "Objective",
                    escape(f"{objective.get('Type', '-')} {objective.get('MetricName', '-')}"),
                ),
                ("Trials", escape(", ".join(f"{k} {v}" for k, v in counters.items() if v) or "-")),
                ("Best training job", linked(Link("training job", best or "?"))),
                ("Failure", escape(job.get("FailureReason") or "-")),
            ]
        )
        + json_block(_without_metadata(job), "DescribeHyperParameterTuningJob")
    )
    return f"Tuning job {name}", body


def training_job_page(target: Target, name: str) -> Page:
    sagemaker = target.client("sagemaker")
    job = described("training job", name, sagemaker.describe_training_job, TrainingJobName=name)
    tuning = (job.get("TuningJobArn") or "").rsplit("/", 1)[-1]
    metrics = ", ".join(
        f"{m['MetricName']} {fmt(float(m['Value']))}" for m in job.get("FinalMetricDataList", [])
    )
    body = (
        f"<h1>Training job {escape(name)} {badge(job.get('TrainingJobStatus'))}</h1>"
        + facts(
            [
                ("Secondary status", escape(job.get("SecondaryStatus") or "-")),
                ("Final metrics", escape(metrics or "-")),
                ("Of tuning job", linked(Link("tuning job", tuning)) if tuning else "-"),
                (
                    "Model artifacts",
                    f"<code>{escape(job.get('ModelArtifacts', {}).get('S3ModelArtifacts', '-'))}"
                    "</code>",
                ),
                ("Failure", escape(job.get("FailureReason") or "-")),
            ]
        )
        + json_block(_without_metadata(job), "DescribeTrainingJob")
    )
    return f"Training job {name}", body


def created_from(sagemaker: Any, model_name: str) -> str | None:
    """The registry version a model was created from (best effort: the model may be gone)."""
    try:
        return model_package_of(sagemaker.describe_model(ModelName=model_name))
    except ClientError:
        return None


def endpoint_config_page(target: Target, name: str) -> Page:
    sagemaker = target.client("sagemaker")
    config = described(
        "endpoint config", name, sagemaker.describe_endpoint_config, EndpointConfigName=name
    )
    rows = []
    for variant in config.get("ProductionVariants", []):
        package = created_from(sagemaker, variant.get("ModelName", ""))
        rows.append(
            [
                escape(variant.get("VariantName", "-")),
                f"<code>{escape(variant.get('ModelName', '-'))}</code>",
                linked(package_link(package)) if package else "-",
                escape(variant.get("InstanceType") or "-"),
            ]
        )
    body = (
        f"<h1>Endpoint config {escape(name)}</h1>"
        + table(["Variant", "Model", "Model package version", "Instance"], rows)
        + json_block(_without_metadata(config), "DescribeEndpointConfig")
    )
    return f"Endpoint config {name}", body


def endpoint_page(target: Target, name: str) -> Page:
    """The endpoint, the config it serves and the registry version behind that config."""
    sagemaker = target.client("sagemaker")
    endpoint = described("endpoint", name, sagemaker.describe_endpoint, EndpointName=name)
    config = endpoint.get("EndpointConfigName")
    package = serving_package(sagemaker, name)
    pending = (endpoint.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
    body = (
        f"<h1>Endpoint {escape(name)} {badge(endpoint.get('EndpointStatus'))}</h1>"
        + facts(
            [
                ("Serves config", linked(Link("endpoint config", config or "?"))),
                (
                    "Serves model package version",
                    linked(package_link(package)) if package else "none from the registry",
                ),
                ("Being deployed", linked(Link("endpoint config", pending)) if pending else "-"),
                ("Failure", escape(endpoint.get("FailureReason") or "-")),
                *(
                    [("Monitoring", MONITORING_LINK)]
                    if name == target.outputs.get("EndpointName")
                    else []
                ),
            ]
        )
        + json_block(_without_metadata(endpoint), "DescribeEndpoint")
    )
    return f"Endpoint {name}", body
