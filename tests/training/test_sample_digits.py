"""mlops.sample_data: the digits in the dog-breed layout, stratified and reproducible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mlops.sample_data import class_folder, write_digits


def listing(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def test_write_digits_layout_and_summary(tmp_path):
    summary = write_digits(tmp_path, max_per_class=10, size=16)
    assert summary["classes"] == [class_folder(d) for d in range(10)]
    assert summary["classes"][:2] == ["000.zero", "001.one"]
    for split, expected in (("train", 6), ("valid", 2), ("test", 2)):
        assert sorted((tmp_path / split).iterdir()) == [
            tmp_path / split / c for c in summary["classes"]
        ]
        assert summary["splits"][split] == dict.fromkeys(summary["classes"], expected)
    assert summary["file_count"] == len(listing(tmp_path)) == 100
    assert {f["key"] for f in summary["files"]} == set(listing(tmp_path))
    image = Image.open(tmp_path / summary["files"][0]["key"])
    assert (image.mode, image.size) == ("RGB", (16, 16))


def test_write_digits_is_deterministic_per_seed(tmp_path):
    first = write_digits(tmp_path / "a", max_per_class=10, seed=3)
    again = write_digits(tmp_path / "b", max_per_class=10, seed=3)
    other = write_digits(tmp_path / "c", max_per_class=10, seed=4)
    assert first["files"] == again["files"]
    assert first["files"] != other["files"]


def test_write_digits_splits_never_share_an_image(tmp_path):
    write_digits(tmp_path)
    names = {s: {p.name for p in (tmp_path / s).rglob("*.png")} for s in ("train", "valid", "test")}
    assert not names["train"] & names["valid"]
    assert not names["train"] & names["test"]
    assert not names["valid"] & names["test"]
    assert sum(len(n) for n in names.values()) == 1797


def test_write_digits_refuses_to_mix_with_old_files(tmp_path):
    write_digits(tmp_path, max_per_class=3)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_digits(tmp_path, max_per_class=3)
    write_digits(tmp_path, max_per_class=5, overwrite=True, manifest=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["file_count"] == 50
    assert len(listing(tmp_path)) == 50


@pytest.mark.parametrize(
    "kwargs",
    [{"valid_fraction": 0.0}, {"valid_fraction": 0.6, "test_fraction": 0.4}, {"max_per_class": 0}],
)
def test_write_digits_rejects_bad_options(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_digits(tmp_path, **kwargs)


def test_sample_data_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mlops.sample_data", str(tmp_path), "--max-per-class", "4"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 40 images of 10 classes" in done.stdout
