"""The report's "Why the model said that": Grad-CAM overlays read from an output.tar.gz."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import tarfile

import boto3
from moto import mock_aws
from PIL import Image
from pipeline_report.describe import job_outputs
from pipeline_report.records import explanations_from_archive
from pipeline_report.render import render
from pipeline_report.target import Target

from tests.report.test_report_units import synthetic_run

HOSTILE = '<img src=x onerror="alert(1)">'


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (112, 112), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def output_archive(files: dict[str, bytes]) -> bytes:
    """An output.tar.gz as SageMaker packs SM_OUTPUT_DATA_DIR (members prefixed ./)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(f"./{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def explanation_files() -> dict[str, bytes]:
    index = {
        "method": "Grad-CAM",
        "layer": "layer2",
        "model": "retrain",
        "test_images": 20,
        "misclassified": 3,
        "images": [
            {
                "file": "explanations/000.png",
                "image": f"003.three/{HOSTILE}.png",
                "true_class": "003.three",
                "true_label": "three",
                "predicted_class": "008.eight",
                "predicted_label": HOSTILE,
                "confidence": 0.61,
                "correct": False,
            },
            {
                "file": "explanations/001.png",
                "image": "001.one/0007.png",
                "true_class": "001.one",
                "true_label": "one",
                "predicted_class": "001.one",
                "predicted_label": "one",
                "confidence": 0.99,
                "correct": True,
            },
            {  # an entry whose file is not a PNG: listed, never embedded
                "file": "explanations/002.png",
                "image": "002.two/0003.png",
                "true_label": "two",
                "predicted_label": "seven",
                "confidence": 0.5,
                "correct": False,
            },
        ],
    }
    return {
        "history.json": b"{}",
        "explanations/index.json": json.dumps(index).encode(),
        "explanations/000.png": png((200, 30, 30)),
        "explanations/001.png": png((30, 30, 200)),
        "explanations/002.png": b"<script>not a png</script>",
    }


def run_with(explanations):
    data = synthetic_run()
    data.retrain = dataclasses.replace(data.retrain, explanations=explanations)
    return data


def section(html: str) -> str:
    start = html.index('<h2 id="explanations">')
    return html[start : html.index("<h2", start + 1)]


def test_report_shows_overlays_from_the_output_archive_escaped_as_data_uris():
    explanations = explanations_from_archive(output_archive(explanation_files()))
    html = render(run_with(explanations), {})
    part = section(html)

    assert "Why the model said that" in part and "<code>layer2</code>" in part
    assert "2 of 3 misclassified and 1 correct test images of 20" in part
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', part)
    assert [base64.b64decode(u) for u in uris] == [png((200, 30, 30)), png((30, 30, 200))]
    assert HOSTILE not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in part
    assert "(overlay missing)" in part and "not a png" not in html
    assert part.count('<figure class="wrong"') == 2 and part.count('<figure class="right"') == 1
    assert '<a href="#explanations">Why the model said that</a>' in html
    embedded = json.loads(
        re.search(r'id="report-data">(.*)</script>', html).group(1).replace("<\\/", "</")
    )
    assert embedded["explanations"]["misclassified"] == 3
    assert [e["overlay"] for e in embedded["explanations"]["images"]] == [True, True, False]


def test_report_renders_without_explanations_and_says_why():
    assert explanations_from_archive(output_archive({"history.json": b"{}"})) is None
    part = section(render(run_with(None), {}))
    assert "No explanations: retrain recorded no explanations/index.json." in part
    assert "<img" not in part

    failed = explanations_from_archive(
        output_archive(
            {
                "explanations/index.json": json.dumps(
                    {"method": "Grad-CAM", "images": [], "error": f"ImportError: {HOSTILE}"}
                ).encode()
            }
        )
    )
    part = section(render(run_with(failed), {}))
    assert "could not compute them" in part and HOSTILE not in part

    data = synthetic_run()
    data.retrain = None
    assert "No explanations: no profiled retrain for this run." in section(render(data, {}))


@mock_aws
def test_job_outputs_reads_explanations_from_the_jobs_output_tar_gz():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="artifacts")
    s3.put_object(
        Bucket="artifacts",
        Key="jobs/retrain/output/output.tar.gz",
        Body=output_archive(explanation_files()),
    )
    job = {
        "TrainingJobStatus": "Completed",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://artifacts/jobs/retrain/output/model.tar.gz"},
    }
    target = Target(name="test", session=boto3.Session(region_name="us-east-1"), outputs={})
    notes: list[str] = []
    outputs, explanations = job_outputs(target, job, notes)
    assert notes == [] and outputs == {"history.json": {}}
    assert [e.image for e in explanations.images][1:] == ["001.one/0007.png", "002.two/0003.png"]
