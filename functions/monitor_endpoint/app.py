"""Watch the endpoint's traffic for drift from its model's baseline; notify, or retrain.

Runs on a schedule (template parameter MonitorSchedule) and on demand (`mlops monitor run`).
Each run:

1. finds the model version that serves (the endpoint config's ``mlops:model-package`` tag)
   and its baseline (the version's DriftCheckBaselines, pipeline_common.baseline);
2. reads what the endpoint captured since the last check (pipeline_common.capture), keeping
   the requests that version's model answered;
3. compares them with the baseline (pipeline_common.drift) and writes
   ``monitoring/<endpoint>/<time>/findings.json``;
4. puts metrics (DriftDetected, RequestsChecked, EmbeddingDriftPValue), publishes to the
   notification topic when drift is found and, with RetrainOnDrift=retrain, starts the
   pipeline again on the newest version of the data set that model came from, at most once
   per RetrainMinIntervalHours.

Fewer than MIN_REQUESTS answers are not judged: the window keeps its start and they count at
the next run. Captures reach S3 minutes late, so a check stops CAPTURE_SETTLE_SECONDS before
now and the next one starts where it stopped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Any, Literal

from pipeline_common.aws import aws_call, client
from pipeline_common.capture import read_captures
from pipeline_common.config import CommonSettings, MonitorSettings
from pipeline_common.drift import MIN_REQUESTS, Features, compare, features_of, unusual
from pipeline_common.endpoints import MODEL_PACKAGE_TAG, serving_config_tags
from pipeline_common.kit import count, logger, measure, step
from pipeline_common.models import StepModel
from pipeline_common.naming import manifest_key, manifest_version_token, retrain_execution_name
from pipeline_common.records import MONITOR_STATE, findings_key, monitoring_key
from pipeline_common.registry import DATASET_KEY, TRAINING_JOB_KEY
from pipeline_common.s3io import MISSING_CODES, parse_s3_uri, s3_uri, write_json
from pydantic import BaseModel

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

s3 = client("s3")
sagemaker = client("sagemaker")
sns = client("sns")
stepfunctions = client("stepfunctions")

FIRST_WINDOW = timedelta(days=1)  # how far back the first check of an endpoint looks
MAX_WINDOW = timedelta(days=7)  # requests older than this are never judged


class MonitorInput(StepModel):
    """An EventBridge scheduled event, or `mlops monitor run`'s {"reason": ...}."""

    reason: str = "schedule"


class MonitorResult(BaseModel):
    endpoint_name: str
    status: Literal["drift", "no-drift", "insufficient", "no-baseline", "no-endpoint"]
    requests: int = 0
    findings_uri: str | None = None
    retrain_execution: str | None = None
    detail: str = ""


class Served(BaseModel):
    """The version the endpoint serves and where its baseline and captures are."""

    package_arn: str
    model: str  # the training job, as the model server names itself in every answer
    dataset: str
    baseline_uri: str
    capture_uri: str


def served_version(endpoint_name: str) -> Served | str:
    """What serves, or why there is nothing to monitor."""
    with aws_call("DescribeEndpoint", endpoint_name, ok={"ValidationException"}) as call:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    if not call.succeeded:
        return f"endpoint {endpoint_name} does not exist"
    capture = endpoint.get("DataCaptureConfig") or {}
    if not capture.get("EnableCapture"):
        return f"endpoint {endpoint_name} captures no requests (DataCaptureSamplingPercentage 0)"
    package_arn = serving_config_tags(sagemaker, endpoint).get(MODEL_PACKAGE_TAG)
    if not package_arn:
        return f"endpoint {endpoint_name} serves no registered model version"
    with aws_call("DescribeModelPackage", package_arn):
        package = sagemaker.describe_model_package(ModelPackageName=package_arn)
    baselines = package.get("DriftCheckBaselines", {}).get("ModelDataQuality", {})
    baseline_uri = baselines.get("Statistics", {}).get("S3Uri")
    if not baseline_uri:
        return f"{package_arn} has no monitoring baseline (DriftCheckBaselines)"
    metadata = package.get("CustomerMetadataProperties", {})
    return Served(
        package_arn=package_arn,
        model=metadata.get(TRAINING_JOB_KEY, ""),
        dataset=metadata.get(DATASET_KEY, ""),
        baseline_uri=baseline_uri,
        capture_uri=capture["DestinationS3Uri"],
    )


def read_json_object(uri: str) -> dict[str, Any] | None:
    bucket, key = parse_s3_uri(uri)
    with aws_call("GetObject", uri, ok=MISSING_CODES):
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return None


def most_unusual(baseline: dict[str, Any], features: Features) -> list[dict[str, Any]]:
    """The captured requests least like the validation data, for a person to look at."""
    if not features.embeddings:
        return []
    rows = []
    for index, score in unusual(baseline["embedding"]["sample"], features.embeddings):
        request = features.requests[index]
        answer = request.answer() or {}
        rows.append(
            {
                "event_id": request.event_id,
                "capture_key": request.key,
                "inference_time": request.inference_time.isoformat(),
                "label": answer.get("label"),
                "score": score,
            }
        )
    return rows


def findings_html(record: dict[str, Any]) -> str:
    """The check as a self-contained HTML section (the console shows the same record)."""
    start, end = (escape(t[:19]) for t in record["window"])
    verdict = "Drift found" if record["drift"] else "No drift"
    rows = "".join(
        f"<tr><td>{escape(f['check'])}</td><td>{escape(f['test'])}</td>"
        f"<td>{f['statistic']:.4g}</td><td>{f['p_value']:.3g}</td><td>{f['threshold']:.3g}</td>"
        f"<td>{'drift' if f['drifted'] else 'ok'}</td><td>{escape(f['detail'])}</td></tr>"
        for f in record["findings"]
    )
    return (
        f"<section class='drift'><h2>{verdict} on {escape(record['endpoint'])}</h2>"
        f"<p>{record['answers_checked']} answers of {escape(record['model'])} "
        f"({escape(record['model_package'])}) from {start}Z to {end}Z.</p>"
        "<table><tr><th>check</th><th>test</th><th>statistic</th><th>p</th><th>threshold</th>"
        f"<th>verdict</th><th>detail</th></tr>{rows}</table></section>\n"
    )


def window(state: dict[str, Any], now: datetime, settle: timedelta) -> tuple[datetime, datetime]:
    """[start, end) in whole seconds (capture times have whole seconds), from where the last
    check stopped."""
    end = (now - settle).replace(microsecond=0)
    start = end - FIRST_WINDOW
    if state.get("checked_until"):
        start = datetime.fromisoformat(state["checked_until"])
    return max(start, end - MAX_WINDOW), end


def notify(settings: MonitorSettings, served: Served, record: dict[str, Any]) -> None:
    drifted = [f for f in record["findings"] if f["drifted"]]
    lines = [
        f"Drift on endpoint {settings.endpoint_name}: {len(record['requests'])} requests "
        f"between {record['window'][0]} and {record['window'][1]} do not look like the "
        f"validation data of {served.package_arn}.",
        "",
        *(f"- {f['check']}: {f['test']} p = {f['p_value']:.2g} ({f['detail']})" for f in drifted),
        "",
        f"Findings: {record['findings_uri']}",
        f"RetrainOnDrift: {settings.retrain_on_drift}. See them with `mlops monitor`.",
    ]
    with aws_call("Publish", settings.topic_arn):
        sns.publish(
            TopicArn=settings.topic_arn,
            Subject=f"Drift on {settings.endpoint_name}"[:100],
            Message="\n".join(lines),
        )


def start_retrain(
    common: CommonSettings, settings: MonitorSettings, served: Served, why: dict[str, Any], now
) -> str:
    """The pipeline on the newest version of the model's data set, with the reason in its input."""
    key = manifest_key(served.dataset)
    with aws_call("HeadObject", s3_uri(common.data_bucket, key)):
        head = s3.head_object(Bucket=common.data_bucket, Key=key)
    token = manifest_version_token(head.get("VersionId"), head.get("ETag"))
    name = retrain_execution_name(served.dataset, now.isoformat())
    document = {
        "bucket": common.data_bucket,
        "manifest_key": key,
        "dataset": served.dataset,
        "manifest_version": token,
        "started_by": why,
    }
    with aws_call("StartExecution", name, ok={"ExecutionAlreadyExists"}):
        stepfunctions.start_execution(
            stateMachineArn=settings.state_machine_arn, name=name, input=json.dumps(document)
        )
    return name


def retrain_due(state: dict[str, Any], settings: MonitorSettings, now: datetime) -> bool:
    last = state.get("last_retrain")
    if last is None:
        return True
    return now - datetime.fromisoformat(last) >= timedelta(
        hours=settings.retrain_min_interval_hours
    )


def monitor(common: CommonSettings, settings: MonitorSettings, reason: str) -> MonitorResult:
    name = settings.endpoint_name
    served = served_version(name)
    if isinstance(served, str):
        status = "no-endpoint" if "does not exist" in served else "no-baseline"
        return MonitorResult(endpoint_name=name, status=status, detail=served)
    state_uri = s3_uri(common.artifacts_bucket, monitoring_key(name, MONITOR_STATE))
    state = read_json_object(state_uri) or {}
    now = datetime.now(UTC)
    start, end = window(state, now, timedelta(seconds=settings.settle_seconds))
    reading = read_captures(s3, served.capture_uri, name, "AllTraffic", start, end)
    features = features_of(reading.requests, served.model or None)
    answered = len(features.predictions)
    measure("RequestsChecked", answered)
    if answered < MIN_REQUESTS:
        detail = f"{answered} answers of {served.model} since {start:%Y-%m-%d %H:%M}Z"
        return MonitorResult(
            endpoint_name=name, status="insufficient", requests=answered, detail=detail
        )
    baseline = read_json_object(served.baseline_uri)
    if baseline is None:
        return MonitorResult(endpoint_name=name, status="no-baseline", detail=served.baseline_uri)
    findings = compare(baseline, features, seed=int(end.timestamp()))
    drifted = any(f.drifted for f in findings)
    key = findings_key(name, end)
    record = {
        "endpoint": name,
        "model_package": served.package_arn,
        "model": served.model,
        "reason": reason,
        "window": [start.isoformat(), end.isoformat()],
        "requests": [r.event_id for r in reading.requests][:10000],
        "answers_checked": answered,
        "unreadable_capture_lines": reading.bad_lines,
        "drift": drifted,
        "findings": [f.to_json() for f in findings],
        "unusual": most_unusual(baseline, features),
        "findings_uri": s3_uri(common.artifacts_bucket, key),
        "retrain": None,
    }
    for item in findings:
        if item.check == "embedding":
            measure("EmbeddingDriftPValue", item.p_value)
    measure("DriftDetected", 1.0 if drifted else 0.0)
    state = {**state, "checked_until": end.isoformat()}
    retrain = None
    if drifted:
        count("DriftFindings")
        if settings.retrain_on_drift == "retrain" and retrain_due(state, settings, now):
            why = {"reason": "drift", "findings": record["findings_uri"]}
            retrain = start_retrain(common, settings, served, why, now)
            state = {**state, "last_retrain": now.isoformat(), "last_retrain_execution": retrain}
        elif settings.retrain_on_drift == "retrain":
            record["retrain"] = f"not started: the last retrain was {state['last_retrain']}"
        if retrain:
            record["retrain"] = retrain
    with aws_call("PutObject", record["findings_uri"]):
        write_json(s3, common.artifacts_bucket, key, record)
    html_key = key.rsplit("/", 1)[0] + "/findings.html"
    with aws_call("PutObject", s3_uri(common.artifacts_bucket, html_key)):
        s3.put_object(
            Bucket=common.artifacts_bucket,
            Key=html_key,
            Body=findings_html(record).encode(),
            ContentType="text/html; charset=utf-8",
        )
    if drifted and settings.retrain_on_drift != "off":
        notify(settings, served, record)
    bucket, state_key = parse_s3_uri(state_uri)
    with aws_call("PutObject", state_uri):
        write_json(s3, bucket, state_key, state)
    return MonitorResult(
        endpoint_name=name,
        status="drift" if drifted else "no-drift",
        requests=answered,
        findings_uri=record["findings_uri"],
        retrain_execution=retrain,
    )


@step(MonitorInput)
def lambda_handler(event: MonitorInput, context: LambdaContext) -> MonitorResult:
    result = monitor(CommonSettings.from_env(), MonitorSettings.from_env(), event.reason)
    logger.info({"operation": "monitor-endpoint", **result.model_dump()})
    return result
