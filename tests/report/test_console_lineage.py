"""The console's lineage pages over HTTP, against moto's S3, Step Functions and SageMaker.

One registered, deployed version is built the way the pipeline leaves it
(tests/support/lineage_state.py); the console runs on 127.0.0.1 on a free port in this process
(moto patches botocore process-wide) and every link of a lineage page is followed. The server
is shut down and moto's mock stopped in `finally`, also when a test fails.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

import boto3
import pytest
from moto import mock_aws
from pipeline_report.lineage import link_region, link_url, run_lineage

from mlops.console import start_console
from mlops.models import lineage
from mlops.target import Target
from tests.support.lineage_state import (
    CONFIG,
    DATASET,
    ENDPOINT,
    GROUP,
    HOSTILE,
    REGION,
    build_state,
)

pytestmark = pytest.mark.timeout(120)


@dataclass
class Console:
    url: str
    target: Target
    execution: str
    version: int


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET (urllib: moto's `responses` patch leaves it alone)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def lineage_links(html: str, container: str = "lineage") -> list[tuple[str, str, str]]:
    """(kind, href, name) of every linked element of the page's lineage list."""
    chain = re.search(rf'<ol class="lineage" id="{container}">(.*?)</ol>', html, re.S)
    assert chain, f"no lineage list on the page:\n{html[:2000]}"
    return re.findall(
        r'<li data-kind="([^"]+)">[^<]*<a href="([^"]+)"><code>([^<]*)</code></a>', chain.group(1)
    )


@dataclass
class State:
    session: boto3.Session
    outputs: dict[str, str]
    execution: str
    version: int


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[State]:
    """moto's S3, Step Functions and SageMaker holding one registered, deployed version."""
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    with mock_aws():
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        run = build_state(session)
        yield State(session, run.outputs, run.execution, run.version)


@pytest.fixture
def console(state: State) -> Iterator[Console]:
    target = Target(name="moto", session=state.session, outputs=state.outputs, local=True)
    server, thread = start_console(target, port=0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        yield Console(url, target, state.execution, state.version)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive(), "the console's thread outlived the test"


# -- tests ---------------------------------------------------------------------------------------
def test_console_version_page_links_every_element_of_the_lineage_to_a_page_naming_it(console):
    status, html = get(f"{console.url}/models/{GROUP}/{console.version}")

    assert status == 200, html
    links = lineage_links(html)
    assert [kind for kind, _, _ in links] == [
        "data set",
        "execution",
        "tuning job",
        "training job",
        "model package",
        "endpoint config",
        "endpoint",
    ]
    for kind, href, name in links:
        followed, page = get(console.url + href)
        assert followed == 200, f"{kind} {href}: {followed}\n{page[:1500]}"
        heading = re.search(r"<h1>(.*?)</h1>", page, re.S)
        assert heading and escape(name) in heading.group(1), f"{href} is not about {name}"
    assert "serves it now" in html


def test_console_version_page_shows_status_accuracy_and_escapes_user_text(console):
    status, html = get(f"{console.url}/models/{GROUP}/{console.version}")

    assert status == 200
    assert '<span class="badge good">Approved</span>' in html
    assert "0.93" in html
    assert HOSTILE not in html
    assert escape(HOSTILE) in html  # the finding and the description, shown, not run


def test_console_models_page_lists_the_version_and_marks_the_one_serving(console):
    status, html = get(f"{console.url}/models")

    assert status == 200, html
    row = re.search(rf'<tr data-version="{GROUP}/{console.version}"([^>]*)>(.*?)</tr>', html)
    assert row, html
    assert 'data-serving="true"' in row.group(1) and "0.9300" in row.group(2)
    assert f'href="/models/{GROUP}/{console.version}"' in row.group(2)
    assert f'href="/executions/{console.execution}"' in row.group(2)


def test_console_execution_page_shows_the_lineage_of_the_version_its_run_registered(console):
    status, html = get(f"{console.url}/executions/{console.execution}")

    assert status == 200, html
    assert "Lineage of the version this run registered" in html
    kinds = {kind: href for kind, href, _ in lineage_links(html)}
    assert kinds["model package"] == f"/models/{GROUP}/{console.version}"
    assert kinds["endpoint"] == f"/endpoints/{ENDPOINT}"


def test_console_endpoint_page_names_the_config_and_version_that_serve(console):
    status, html = get(f"{console.url}/endpoints/{ENDPOINT}")

    assert status == 200, html
    assert f'href="/endpoint-configs/{CONFIG}"' in html
    assert f'href="/models/{GROUP}/{console.version}"' in html


def test_console_dataset_page_names_the_run_each_manifest_version_started(console):
    status, html = get(f"{console.url}/datasets/{DATASET}")

    assert status == 200, html
    assert f'href="/executions/{console.execution}"' in html
    assert "(current)" in html
    assert HOSTILE not in html


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/training-jobs/" + quote(HOSTILE, safe=""), f"No training job {HOSTILE}"),
        ("/tuning-jobs/mlops-nothing", "No tuning job mlops-nothing"),
        ("/endpoint-configs/mlops-nothing", "No endpoint config mlops-nothing"),
        ("/endpoints/mlops-nothing", "No endpoint mlops-nothing"),
        ("/datasets/nothing", "No data set nothing"),
        (f"/models/{GROUP}/99", "has no version 99"),
        (f"/models/{GROUP}/seven", "No model package version"),
        ("/models/mlops-nothing-models/1", "No model package version"),
        ("/executions/nothing-0123456789abcdef", "nothing-0123456789abcdef"),
        ("/weather/" + quote(HOSTILE, safe=""), f"No page at /weather/{HOSTILE}"),
    ],
)
def test_console_unknown_names_answer_404_with_a_clear_message(console, path, says):
    status, html = get(console.url + path)

    assert status == 404, html
    assert escape(says) in html
    assert "Traceback" not in html and HOSTILE not in html


# -- the same chain for `mlops lineage` and the report ---------------------------------------------
def test_mlops_lineage_is_the_chain_the_console_shows(console):
    _, html = get(f"{console.url}/models/{GROUP}/{console.version}")

    links = lineage(console.target, DATASET, console.version)

    assert [(link.kind, link.name) for link in links] == [
        (kind, name) for kind, _, name in lineage_links(html)
    ]


def test_report_lineage_reads_the_chain_with_the_write_report_functions_target(state):
    # WriteReport's Target: the two buckets only, no stack outputs (functions/write_report).
    outputs = {k: state.outputs[k] for k in ("DataBucketName", "ArtifactsBucketName")}
    target = Target(name="mlops", session=state.session, outputs=outputs)
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/{state.version}"
    notes: list[str] = []

    links = run_lineage(target, arn, notes)

    assert notes == []
    urls = {link.kind: link_url(link, link_region(target)) for link in links}
    assert urls["endpoint"] == (
        f"https://{REGION}.console.aws.amazon.com/sagemaker/home?region={REGION}"
        f"#/endpoints/{ENDPOINT}"
    )
    assert urls["execution"].endswith(f":execution:mlops-pipeline:{state.execution}")
    assert urls["data set"] == (
        "https://s3.console.aws.amazon.com/s3/object/mlops-data"
        f"?region={REGION}&prefix=datasets%2F{DATASET}%2Fmanifest.json"
    )
    assert links[-1].detail == "serves it now"


def test_report_lineage_of_a_version_that_cannot_be_read_is_a_note(state):
    target = Target(name="mlops", session=state.session, outputs=state.outputs)
    notes: list[str] = []

    links = run_lineage(target, f"arn:aws:sagemaker:{REGION}:123456789012:model-package/x/9", notes)

    assert links == []
    assert len(notes) == 1 and notes[0].startswith("No lineage for ")


def test_mlops_lineage_command_prints_each_elements_aws_console_page_for_a_stack(
    state, monkeypatch, capsys
):
    from mlops import cli

    stack = Target(name="prod", session=state.session, outputs=state.outputs)
    monkeypatch.setattr(cli, "resolve_target", lambda stack_name, root: stack)

    code = cli.main(["lineage", str(state.version), "--dataset", DATASET, "--stack", "prod"])

    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    assert printed[0].startswith(f"data set: {DATASET}  (manifest version v:")
    assert printed[1].strip().startswith("https://s3.console.aws.amazon.com/s3/object/")
    assert printed[-2].strip().startswith(f"-> endpoint: {ENDPOINT}  (serves it now)")
    assert printed[-1].strip().endswith(f"#/endpoints/{ENDPOINT}")


def test_console_page_the_target_cannot_serve_is_a_500_that_says_why(state):
    outputs = {k: v for k, v in state.outputs.items() if k != "ProjectName"}
    target = Target(name="bare", session=state.session, outputs=outputs, local=True)
    server, thread = start_console(target, port=0)
    try:
        status, html = get(f"http://127.0.0.1:{server.server_address[1]}/models")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

    assert status == 500
    assert "has no output ProjectName" in html and "Traceback" not in html


def test_console_execution_page_of_a_promotion_shows_the_version_it_deployed(state, console):
    promotion = "deploy-digits-v1-0a1b2c3d"
    state.session.client("stepfunctions").start_execution(
        stateMachineArn=state.outputs["StateMachineArn"], name=promotion, input="{}"
    )
    registered = f"runs/{state.execution}/model_package.json"
    s3, bucket = state.session.client("s3"), state.outputs["ArtifactsBucketName"]
    record = json.loads(s3.get_object(Bucket=bucket, Key=registered)["Body"].read())
    deployment = {"endpoint_name": ENDPOINT, "model_package_arn": record["model_package_arn"]}
    s3.put_object(
        Bucket=bucket, Key=f"runs/{promotion}/deployment.json", Body=json.dumps(deployment)
    )

    status, html = get(f"{console.url}/executions/{promotion}")

    assert status == 200, html
    assert "Lineage of the version this run deployed" in html
    kinds = {kind: name for kind, _, name in lineage_links(html)}
    assert kinds["execution"] == state.execution  # the run that made the version
    assert kinds["model package"] == f"{GROUP}/{state.version}"
