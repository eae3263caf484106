"""write_report: the run's report in the artifacts bucket, with the registered version's lineage.

moto holds a registered, deployed version (tests/support/lineage_state.py) under the
template's bucket and state machine names; the conftest checks every call the report makes
against WriteReport's role in template.yaml (DescribeModelPackage included).
"""

from __future__ import annotations

import re

import boto3
import pytest

from tests.support.lineage_state import ENDPOINT, GROUP, HOSTILE, REGION, build_state

SAGEMAKER = f"https://{REGION}.console.aws.amazon.com/sagemaker/home?region={REGION}#/"


@pytest.fixture
def run(load_handler, buckets):
    app = load_handler("write_report")
    state = build_state(boto3.Session(region_name=REGION), buckets.data, buckets.artifacts)
    return app, state, buckets


def test_write_report_links_the_registered_versions_lineage_to_the_aws_console(run, context):
    app, state, buckets = run

    written = app.lambda_handler(
        {"execution_arn": state.execution_arn, "execution_name": state.execution}, context
    )

    key = f"runs/{state.execution}/report.html"
    assert written["report_uri"] == f"s3://{buckets.artifacts}/{key}"
    html = buckets.s3.get_object(Bucket=buckets.artifacts, Key=key)["Body"].read().decode()
    chain = re.search(r'<ol class="lineage" id="lineage">(.*?)</ol>', html, re.S)
    assert chain, "the report shows no lineage"
    hrefs = dict(re.findall(r'<li data-kind="([^"]+)">[^<]*<a href="([^"]+)"', chain.group(1)))
    assert hrefs["model package"] == f"{SAGEMAKER}model-package-groups/{GROUP}"
    assert hrefs["endpoint"] == f"{SAGEMAKER}endpoints/{ENDPOINT}"
    assert hrefs["execution"].endswith(f"#/v2/executions/details/{state.execution_arn}")
    assert "serves it now" in chain.group(1)
    assert HOSTILE not in html.split('<script type="application/json"')[0]


def test_write_report_knows_the_local_cloud_by_its_endpoint_variable(run, monkeypatch):
    from pipeline_common.config import CommonSettings

    app, _, _ = run

    assert app.pipeline_target(CommonSettings.from_env()).local is False
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    assert app.pipeline_target(CommonSettings.from_env()).local is True
