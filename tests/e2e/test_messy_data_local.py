"""Messy data on the local cloud: damaged and exotic images never break a run.

A real data set always has a few bad files. Here a corrupt image sorts FIRST in every split
(the old smoke test sent exactly that one and failed the run), beside a zero-byte file, a
16-bit PNG and images in odd modes (CMYK, palette with transparency, LA). The run must
succeed, the smoke test must have sent a readable image, and validation.json, gate.json and
the report must count the skipped files. A second data set, whose class has only unreadable
training images, must stop in ValidateDataset with an error naming the class.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pipeline_report import executions as ex
from pipeline_report.records import read_record

from mlops import cli
from mlops.local.process import start_cloud_process, stop_cloud_process
from mlops.runs import follow, resolve_execution, upload_dataset
from mlops.sample_data import write_digits
from mlops.target import local_target
from tests.support.runs import WARN_ONLY_RULES, tiny_run

# The smallest real run: one trial and the retrain, 2 epochs on 16-pixel digits. The rules
# only warn here: this module is about data, the rule gate has its own tests and bench.
PARAMETERS = tiny_run(max_jobs=1, epochs=2, GatePolicy=WARN_ONLY_RULES)
PER_CLASS = 20  # 14 train, 3 valid, 3 test per class: one bad file still leaves the minimum
EXECUTION_TIMEOUT_S = 900
FIRST_CLASS = "000.zero"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def messy_files(sample: Path) -> dict[str, bytes]:
    """Relative path -> bytes of the bad and exotic files added to the digits."""
    photo = Image.open(sample).convert("RGB")
    png = encode(photo, "PNG")
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    sixteen = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    assert sixteen.mode == "I;16", sixteen.mode
    files = {
        # "0000-..." sorts before every "NNNN.png" of the class: first in its split.
        f"{split}/{FIRST_CLASS}/0000-corrupt.png": png[: len(png) // 2]
        for split in ("train", "valid", "test")
    }
    files.update(
        {
            "train/001.one/0000-empty.png": b"",
            "train/002.two/5000-sixteen-bit.png": encode(sixteen, "PNG"),
            "test/002.two/5000-sixteen-bit.png": encode(sixteen, "PNG"),
            "train/003.three/5000-cmyk.jpg": encode(photo.convert("CMYK"), "JPEG"),
            "valid/004.four/5000-palette.png": encode(palette, "PNG", transparency=0),
            "train/005.five/5000-la.png": encode(photo.convert("LA"), "PNG"),
        }
    )
    return files


@pytest.fixture(scope="module")
def cloud_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy-cloud")
    process, _ = start_cloud_process(root, parameters=PARAMETERS)
    try:
        yield root
    finally:
        stop_cloud_process(process)


@pytest.fixture(scope="module")
def cloud(cloud_root):
    return local_target(cloud_root)


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data") / "messy"
    write_digits(directory, max_per_class=PER_CLASS, size=16, seed=2)
    sample = next((directory / "train" / FIRST_CLASS).iterdir())
    for relative, data in messy_files(sample).items():
        (directory / relative).write_bytes(data)
    return directory


def run(target, directory: Path, name: str) -> ex.ExecutionView:
    execution = upload_dataset(target, directory, name)
    sfn = target.client("stepfunctions")
    return follow(sfn, execution["executionArn"], poll_s=1.0, timeout_s=EXECUTION_TIMEOUT_S)


def test_e2e_messy_data_set_trains_deploys_and_counts_the_skipped_files(cloud, messy):
    view = run(cloud, messy, "messy")

    assert view.status == "SUCCEEDED", f"{view.error}: {view.cause}"
    smoke = read_record(cloud, view.name, "smoke_test.json")
    assert smoke is not None
    assert smoke["image_key"].startswith(f"datasets/messy/test/{FIRST_CLASS}/")
    assert "corrupt" not in smoke["image_key"]
    assert "input_rejected" not in smoke, smoke
    assert isinstance(smoke["predicted_class_index"], int)

    validation = read_record(cloud, view.name, "validation.json")
    images = validation["images"]
    assert images["unreadable_count"] == 4
    assert images["unreadable"]["train"][FIRST_CLASS] == 1
    assert images["unreadable"]["train"]["001.one"] == 1
    assert images["unreadable"]["test"][FIRST_CLASS] == 1
    unreadable = {f["file"] for f in images["unreadable_files"]}
    assert "train/001.one/0000-empty.png" in unreadable
    assert not any("sixteen" in f or "cmyk" in f or "palette" in f for f in unreadable)
    assert any("unreadable image(s) in train/" in w for w in validation["warnings"])

    gate = read_record(cloud, view.name, "gate.json")
    skipped = {f["file"] for f in gate["skipped_files"]}
    assert gate["skipped_images"] == 4, gate["skipped_files"]
    assert f"{FIRST_CLASS}/0000-corrupt.png" in skipped
    assert "001.one/0000-empty.png" in skipped

    report = (
        cloud.client("s3")
        .get_object(Bucket=cloud.artifacts_bucket, Key=f"runs/{view.name}/report.html")["Body"]
        .read()
        .decode()
    )
    assert 'data-unreadable-images="4"' in report
    assert 'data-skipped-images="4"' in report


def test_e2e_class_with_only_unreadable_images_fails_in_validation(
    cloud, cloud_root, messy, tmp_path, capsys
):
    broken = tmp_path / "broken"
    shutil.copytree(messy, broken)
    for image in (broken / "train" / "007.seven").iterdir():
        image.write_bytes(b"not an image")

    code = cli.main(["upload", str(broken), "--name", "broken", "--root", str(cloud_root)])

    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "Validation failed: DatasetInvalid" in printed
    assert "007.seven" in printed
    sfn = cloud.client("stepfunctions")
    [name] = re.findall(r"^Started execution (\S+)$", printed, re.MULTILINE)
    view = follow(sfn, resolve_execution(cloud, name), poll_s=1.0, timeout_s=EXECUTION_TIMEOUT_S)
    assert view.input["dataset"] == "broken", view.input
    assert view.status == "FAILED"
    assert view.error == "DatasetInvalid", view.error
    assert "class 007.seven has 0 readable images in train/" in (view.cause or "")
    assert "train/007.seven/" in (view.cause or "")
    names = [row.name for row in ex.summarize_steps(view.steps)]
    assert "ValidateDataset" in names and "StartTuning" not in names, names
