"""The lineage chain's links: exact AWS console and mlops console addresses, hostile names."""

from __future__ import annotations

import re

import pytest
from pipeline_report.lineage import Link, lineage_html, link_url, package_link

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/mlops-digits-models/7"
RUN_ARN = "arn:aws:states:eu-west-1:123456789012:execution:mlops-pipeline:digits-0123456789abcdef"
HOSTILE = '<script>alert("x")</script>/../?a=1#b'
ENCODED = "%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E%2F..%2F%3Fa%3D1%23b"

CHAIN = [
    Link(
        "data set",
        "digits",
        "manifest version v:abc",
        "s3://mlops-data/datasets/digits/manifest.json",
    ),
    Link("execution", "digits-0123456789abcdef", RUN_ARN, RUN_ARN),
    Link("tuning job", "mlops-digits-tune-1a2b3c4d"),
    Link("training job", "mlops-digits-retrain-1a2b3c4d"),
    package_link(ARN, "Approved"),
    Link("endpoint config", "mlops-digits-1a2b3c4d"),
    Link("endpoint", "mlops-endpoint", "serves it now"),
]
SAGEMAKER = "https://eu-west-1.console.aws.amazon.com/sagemaker/home?region=eu-west-1#/"


def test_link_url_on_aws_opens_each_elements_aws_console_page():
    urls = [link_url(link, "eu-west-1") for link in CHAIN]

    assert urls == [
        "https://s3.console.aws.amazon.com/s3/object/mlops-data"
        "?region=eu-west-1&prefix=datasets%2Fdigits%2Fmanifest.json",
        "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1"
        f"#/v2/executions/details/{RUN_ARN}",
        SAGEMAKER + "hyper-tuning-jobs/mlops-digits-tune-1a2b3c4d",
        SAGEMAKER + "jobs/mlops-digits-retrain-1a2b3c4d",
        SAGEMAKER + "model-package-groups/mlops-digits-models",
        SAGEMAKER + "endpointConfig/mlops-digits-1a2b3c4d",
        SAGEMAKER + "endpoints/mlops-endpoint",
    ]


def test_link_url_locally_opens_the_mlops_consoles_pages():
    urls = [link_url(link, None) for link in CHAIN]

    assert urls == [
        "/datasets/digits",
        "/executions/digits-0123456789abcdef",
        "/tuning-jobs/mlops-digits-tune-1a2b3c4d",
        "/training-jobs/mlops-digits-retrain-1a2b3c4d",
        "/models/mlops-digits-models/7",
        "/endpoint-configs/mlops-digits-1a2b3c4d",
        "/endpoints/mlops-endpoint",
    ]


@pytest.mark.parametrize("region", [None, "eu-west-1"])
@pytest.mark.parametrize("kind", ["tuning job", "training job", "endpoint config", "endpoint"])
def test_link_url_keeps_a_hostile_name_inside_one_path_segment(kind, region):
    url = link_url(Link(kind, HOSTILE), region)

    assert url is not None
    tail = url.rsplit("/", 1)[-1]
    assert tail == ENCODED
    assert not set('<>"') & set(url)
    assert url.count("?") == (1 if region else 0) and url.count("#") == (1 if region else 0)


def test_link_url_of_a_hostile_data_set_and_region_stays_encoded():
    link = Link("data set", HOSTILE, "", "s3://bucket/datasets/<x>&y=1/manifest.json")

    assert link_url(link, None) == "/datasets/" + ENCODED
    aws = link_url(link, 'x"><img>')
    assert aws == (
        "https://s3.console.aws.amazon.com/s3/object/bucket?region=x%22%3E%3Cimg%3E"
        "&prefix=datasets%2F%3Cx%3E%26y%3D1%2Fmanifest.json"
    )


def test_link_url_has_no_page_for_what_is_not_known():
    assert link_url(Link("tuning job", "?"), None) is None
    assert link_url(Link("execution", "run", "", ""), "eu-west-1") is None  # no ARN
    assert link_url(Link("data set", "digits", "", ""), "eu-west-1") is None  # no manifest URI
    assert link_url(Link("weather", "sunny"), None) is None


def test_package_link_names_group_and_version_from_the_arn():
    link = package_link(ARN, "Rejected")

    assert (link.kind, link.name, link.detail, link.locator) == (
        "model package",
        "mlops-digits-models/7",
        f"Rejected, {ARN}",
        ARN,
    )
    assert package_link("not-an-arn").name == "?/?"


def test_lineage_html_escapes_names_and_details_and_links_known_elements():
    links = [
        Link("tuning job", HOSTILE, "<b>bold</b>"),
        Link("training job", "?"),
        Link("endpoint", "mlops-endpoint", "serves it now"),
    ]

    html = lineage_html(links, None)

    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == [link_url(links[0], None), "/endpoints/mlops-endpoint"]
    assert '<li data-kind="training job">training job <code>?</code></li>' in html
