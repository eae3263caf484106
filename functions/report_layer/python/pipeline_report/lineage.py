"""Where a registered model version came from and where it serves, each step a link.

The chain data set version -> execution -> tuning job -> training job -> model package version
-> endpoint config -> endpoint is read from the version itself (RegisterModel wrote every
origin fact into its CustomerMetadataProperties and MetadataProperties.GeneratedBy), its run's
deployment.json and the endpoint's current model. `mlops lineage`, `mlops console` and the run
report all call :func:`package_lineage`, so the three cannot tell different stories.

Each element links to a page about it (:func:`link_url`): on AWS the AWS console's page, built
from the region and the names; on the local cloud, whose resources no AWS console knows,
`mlops console`'s page (root-relative, so the links work in the console and in the reports it
serves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from botocore.exceptions import BotoCoreError, ClientError
from pipeline_common.naming import execution_arn, manifest_key
from pipeline_common.records import DEPLOYMENT
from pipeline_common.registry import (
    DATASET_KEY,
    EXECUTION_KEY,
    MANIFEST_VERSION_KEY,
    MODEL_PACKAGE_ARN,
    TRAINING_JOB_KEY,
    TUNING_JOB_KEY,
)

from pipeline_report.records import read_record
from pipeline_report.target import Target

KINDS = (
    "data set",
    "execution",
    "tuning job",
    "training job",
    "model package",
    "endpoint config",
    "endpoint",
)
UNKNOWN = "?"

# The pages of `mlops console` (mlops/console.py routes them); {group}/{version} for a package.
CONSOLE_PAGES = {
    "data set": "/datasets/{name}",
    "execution": "/executions/{name}",
    "tuning job": "/tuning-jobs/{name}",
    "training job": "/training-jobs/{name}",
    "model package": "/models/{group}/{version}",
    "endpoint config": "/endpoint-configs/{name}",
    "endpoint": "/endpoints/{name}",
}
# The SageMaker console's pages (after `#/`). The model package link opens the version's group:
# docs/registry.md says what is and is not verified about these addresses.
SAGEMAKER_PAGES = {
    "tuning job": "hyper-tuning-jobs/{name}",
    "training job": "jobs/{name}",
    "model package": "model-package-groups/{group}",
    "endpoint config": "endpointConfig/{name}",
    "endpoint": "endpoints/{name}",
}


@dataclass
class Link:
    """One element of the chain: what it is, its name, a word about it, and where it lives
    when the name alone does not say (an ARN, or the manifest's s3:// URI)."""

    kind: str
    name: str
    detail: str = ""
    locator: str = ""


# -- links ----------------------------------------------------------------------------------------
def link_url(link: Link, region: str | None) -> str | None:
    """The page of one element: the AWS console's in ``region``, or with ``region`` None the
    mlops console's; None when the element is not known well enough to have one.

    Every name is percent-encoded into one path segment or query value, so a hostile name can
    neither leave its segment nor the URL; HTML-escaping the result is the caller's job, as
    for any attribute value.
    """
    if link.name in ("", UNKNOWN) or link.kind not in CONSOLE_PAGES:
        return None
    group, _, version = link.name.rpartition("/")
    names = {"name": _segment(link.name), "group": _segment(group), "version": _segment(version)}
    if region is None:
        return CONSOLE_PAGES[link.kind].format(**names)
    home = f"https://{_segment(region)}.console.aws.amazon.com"
    if link.kind == "data set":
        bucket, _, key = link.locator.removeprefix("s3://").partition("/")
        if not bucket or not key:
            return None
        query = urlencode({"region": region, "prefix": key})
        return f"https://s3.console.aws.amazon.com/s3/object/{_segment(bucket)}?{query}"
    if link.kind == "execution":
        if not link.locator:
            return None
        return (
            f"{home}/states/home?region={_segment(region)}#/v2/executions/details/"
            f"{quote(link.locator, safe=':')}"
        )
    page = SAGEMAKER_PAGES[link.kind].format(**names)
    return f"{home}/sagemaker/home?region={_segment(region)}#/{page}"


def _segment(text: str) -> str:
    return quote(text, safe="")


def link_region(target: Target) -> str | None:
    """Where a target's links lead: its region's AWS console, or None (the mlops console's
    pages) for the local cloud."""
    return None if target.local else target.region


def lineage_html(links: Sequence[Link], region: str | None) -> str:
    """The chain as an ordered list, each element linked where it has a page; every name and
    detail escaped (they come from users: data set names, reasons, tags)."""
    items = []
    for link in links:
        url = link_url(link, region)
        name = f"<code>{escape(link.name)}</code>"
        shown = f'<a href="{escape(url)}">{name}</a>' if url else name
        detail = f' <span class="muted">{escape(link.detail)}</span>' if link.detail else ""
        items.append(
            f'<li data-kind="{escape(link.kind)}">{escape(link.kind)} {shown}{detail}</li>'
        )
    return f'<ol class="lineage" id="lineage">{"".join(items)}</ol>'


# -- the chain ------------------------------------------------------------------------------------
def package_link(arn: str, status: str = "", group: str | None = None) -> Link:
    """A model package version as a chain element, named ``<group>/<version>``."""
    match = MODEL_PACKAGE_ARN.match(arn)
    group = group or (match.group("group") if match else UNKNOWN)
    version = match.group("version") if match else UNKNOWN
    detail = f"{status}, {arn}" if status else arn
    return Link("model package", f"{group}/{version}", detail, arn)


def serving_package(sagemaker: Any, endpoint_name: str) -> str | None:
    """The model package version behind the endpoint's current config (None: no endpoint, or a
    model not created from a package)."""
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
        config = sagemaker.describe_endpoint_config(
            EndpointConfigName=endpoint["EndpointConfigName"]
        )
        model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    except sagemaker.exceptions.ClientError:
        return None
    return model_package_of(model)


def model_package_of(model: dict[str, Any]) -> str | None:
    """The registry version a model (a DescribeModel answer) was created from, if any."""
    containers = [model.get("PrimaryContainer") or {}, *model.get("Containers", [])]
    return next((c["ModelPackageName"] for c in containers if c.get("ModelPackageName")), None)


def package_lineage(target: Target, package: dict[str, Any]) -> list[Link]:
    """The chain of one version (a DescribeModelPackage answer): its origin from its metadata,
    its deployment from its run's deployment.json, and whether the endpoint serves it now."""
    metadata = package.get("CustomerMetadataProperties", {})
    arn = package["ModelPackageArn"]
    dataset = metadata.get(DATASET_KEY, UNKNOWN)
    execution = metadata.get(EXECUTION_KEY, "")
    generated_by = (package.get("MetadataProperties") or {}).get("GeneratedBy", "")
    run_arn = generated_by or _execution_arn(target, execution)
    bucket = target.outputs.get("DataBucketName")
    manifest = f"s3://{bucket}/{manifest_key(dataset)}" if bucket and dataset != UNKNOWN else ""
    links = [
        Link(
            "data set",
            dataset,
            f"manifest version {metadata.get(MANIFEST_VERSION_KEY, UNKNOWN)}",
            manifest,
        ),
        Link("execution", execution or UNKNOWN, run_arn, run_arn),
        Link("tuning job", metadata.get(TUNING_JOB_KEY, UNKNOWN)),
        Link("training job", metadata.get(TRAINING_JOB_KEY, UNKNOWN)),
        package_link(
            arn, package.get("ModelApprovalStatus", ""), package.get("ModelPackageGroupName")
        ),
    ]
    deployment = read_record(target, execution, DEPLOYMENT) if execution else None
    if deployment:
        links.append(Link("endpoint config", deployment.get("endpoint_config_name", UNKNOWN)))
    endpoint = (deployment or {}).get("endpoint_name") or target.outputs.get("EndpointName")
    if endpoint:
        serving = serving_package(target.client("sagemaker"), endpoint) == arn
        links.append(
            Link("endpoint", endpoint, "serves it now" if serving else "does not serve it")
        )
    return links


def _execution_arn(target: Target, execution: str) -> str:
    machine = target.outputs.get("StateMachineArn")
    return execution_arn(machine, execution) if machine and execution else ""


def run_lineage(target: Target, package_arn: str, notes: list[str]) -> list[Link]:
    """The chain of the version a run registered, for its report; a version that cannot be read
    becomes a note (the report never fails for it)."""
    try:
        package = target.client("sagemaker").describe_model_package(ModelPackageName=package_arn)
        return package_lineage(target, package)
    except (ClientError, BotoCoreError) as exc:
        notes.append(f"No lineage for {package_arn}: {exc}")
        return []
