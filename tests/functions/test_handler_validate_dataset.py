"""validate_dataset: every layout problem named before any compute is spent."""

from __future__ import annotations

import json
import re

import pytest
from pipeline_common.errors import DatasetInvalid, DatasetTooLarge

from tests.functions.handler_helpers import load_event, messy_images, upload_dataset


@pytest.fixture
def app(load_handler, buckets):
    return load_handler("validate_dataset")


def run(app, context, **changes):
    return app.lambda_handler({**load_event("validate_dataset.json"), **changes}, context)


def test_validate_dataset_accepts_a_valid_data_set(app, buckets, context):
    upload_dataset(buckets.s3, buckets.data)

    result = run(app, context)

    assert result["name"] == "digits"
    assert result["counts"] == {"train": 10, "valid": 4, "test": 4}
    assert result["channels"]["valid"] == f"s3://{buckets.data}/datasets/digits/valid/"
    assert result["sample_image"] == {
        "key": "datasets/digits/test/000.zero/0000.png",
        "class_index": 0,
        "class_name": "000.zero",
    }
    record = buckets.s3.get_object(
        Bucket=buckets.artifacts, Key="runs/digits-0123456789abcdef/validation.json"
    )
    assert json.loads(record["Body"].read())["classes"] == ["000.zero", "001.one"]


def test_validate_dataset_missing_split_is_named(app, buckets, context):
    counts = {"train": {"000.zero": 2, "001.one": 2}, "test": {"000.zero": 1, "001.one": 1}}
    upload_dataset(buckets.s3, buckets.data, counts=counts)

    with pytest.raises(DatasetInvalid, match="no 'valid' split"):
        run(app, context)


def test_validate_dataset_count_mismatch_names_folder_and_counts(app, buckets, context):
    upload_dataset(buckets.s3, buckets.data)
    buckets.s3.delete_object(Bucket=buckets.data, Key="datasets/digits/train/001.one/0002.png")

    with pytest.raises(DatasetInvalid) as error:
        run(app, context)

    assert "train/001.one/: manifest says 5 images, bucket has 4" in str(error.value)
    assert "file_count is 18 but the bucket holds 17 images" in str(error.value)


def test_validate_dataset_class_folders_that_differ_between_splits(app, buckets, context):
    upload_dataset(buckets.s3, buckets.data)
    buckets.s3.put_object(
        Bucket=buckets.data, Key="datasets/digits/valid/002.two/0000.png", Body=b"\x89PNG"
    )

    with pytest.raises(DatasetInvalid, match=r"folder valid/002.two/ holds 1 images"):
        run(app, context)


def test_validate_dataset_empty_class_is_named(app, buckets, context):
    counts = {
        "train": {"000.zero": 2, "001.one": 0},
        "valid": {"000.zero": 1, "001.one": 1},
        "test": {"000.zero": 1, "001.one": 1},
    }
    upload_dataset(buckets.s3, buckets.data, counts=counts)

    with pytest.raises(DatasetInvalid, match=r"class 001.one in split train has no images"):
        run(app, context)


def test_validate_dataset_non_image_file_is_named(app, buckets, context):
    upload_dataset(buckets.s3, buckets.data, extra_keys=("train/000.zero/notes.txt",))

    with pytest.raises(DatasetInvalid, match=r"train/000.zero/notes.txt is not an image"):
        run(app, context)


def test_validate_dataset_manifest_that_is_not_json(app, buckets, context):
    upload_dataset(buckets.s3, buckets.data)
    buckets.s3.put_object(Bucket=buckets.data, Key="datasets/digits/manifest.json", Body=b"{oops")

    with pytest.raises(DatasetInvalid, match=r"manifest.json is not valid JSON"):
        run(app, context)


def test_validate_dataset_manifest_with_wrong_schema(app, buckets, context):
    upload_dataset(buckets.s3, buckets.data, manifest={"schema_version": 2, "file_count": -1})

    with pytest.raises(DatasetInvalid) as error:
        run(app, context)

    assert "field schema_version" in str(error.value)
    assert "field file_count" in str(error.value)


def test_validate_dataset_file_entry_with_other_size(app, buckets, context):
    files = [{"key": "train/000.zero/0000.png", "size": 1, "sha256": "x"}]
    upload_dataset(buckets.s3, buckets.data, manifest={"files": files})

    with pytest.raises(
        DatasetInvalid, match=r"train/000.zero/0000.png: manifest.json says 1 bytes"
    ):
        run(app, context)


def test_validate_dataset_manifest_gone(app, buckets, context):
    with pytest.raises(DatasetInvalid, match="no longer exists"):
        run(app, context)


def test_validate_dataset_other_bucket_is_refused(app, buckets, context):
    with pytest.raises(DatasetInvalid, match="not in the pipeline's data bucket"):
        run(app, context, bucket="someone-elses-bucket")


def test_validate_dataset_name_that_cannot_name_jobs(app, buckets, context):
    upload_dataset(buckets.s3, buckets.data, name="Dogs_2")

    with pytest.raises(DatasetInvalid, match="must match"):
        run(app, context, dataset="Dogs_2", manifest_key="datasets/Dogs_2/manifest.json")


def test_validate_dataset_lists_every_problem_at_once(app, buckets, context):
    upload_dataset(
        buckets.s3,
        buckets.data,
        manifest={"classes": ["001.one", "000.zero"], "dataset": "cats"},
        extra_keys=("extra/file.png",),
    )

    with pytest.raises(DatasetInvalid) as error:
        run(app, context)

    message = str(error.value)
    assert "names data set 'cats'" in message
    assert "sorted order" in message
    assert "unexpected folder extra/" in message


# -- every image is read: unreadable files, small classes, the smoke test's image ----------------
MESSY = messy_images()
VALIDATION_KEY = "runs/digits-0123456789abcdef/validation.json"


def validation_record(buckets) -> dict:
    return json.loads(
        buckets.s3.get_object(Bucket=buckets.artifacts, Key=VALIDATION_KEY)["Body"].read()
    )


def test_validate_dataset_skips_unreadable_images_and_warns(app, buckets, context):
    counts = {
        "train": {"000.zero": 6, "001.one": 6},
        "valid": {"000.zero": 3, "001.one": 3},
        "test": {"000.zero": 3, "001.one": 3},
    }
    bodies = {
        f"{split}/000.zero/0000.png": MESSY["truncated_jpeg"]
        for split in ("train", "valid", "test")
    }
    bodies["train/001.one/0003.png"] = MESSY["zero_bytes"]
    upload_dataset(buckets.s3, buckets.data, counts=counts, bodies=bodies)

    result = run(app, context)

    assert result["sample_image"]["key"] == "datasets/digits/test/000.zero/0001.png"
    record = validation_record(buckets)
    assert record["images"]["unreadable_count"] == 4
    assert record["images"]["unreadable"]["train"] == {"000.zero": 1, "001.one": 1}
    assert record["images"]["readable"]["test"] == {"000.zero": 2, "001.one": 3}
    files = {f["file"]: f["reason"] for f in record["images"]["unreadable_files"]}
    assert "empty file" in files["train/001.one/0003.png"]
    assert "corrupt image" in files["test/000.zero/0000.png"]
    assert any("2 unreadable image(s) in train/" in w for w in record["warnings"])


def test_validate_dataset_class_with_only_unreadable_images_is_named(app, buckets, context):
    bodies = {f"train/001.one/{i:04d}.png": MESSY["zero_bytes"] for i in range(5)}
    upload_dataset(buckets.s3, buckets.data, bodies=bodies)

    with pytest.raises(DatasetInvalid) as error:
        run(app, context)

    message = str(error.value)
    assert "class 001.one has 0 readable images in train/, fewer than the minimum of 5" in message
    assert "train/001.one/0000.png (empty file (0 bytes))" in message
    assert "000.zero" not in message


def test_validate_dataset_only_zero_byte_images_is_invalid(app, buckets, context):
    counts = {
        "train": {"000.zero": 5, "001.one": 5},
        "valid": {"000.zero": 2, "001.one": 2},
        "test": {"000.zero": 2, "001.one": 2},
    }
    bodies = {
        f"{split}/{c}/{i:04d}.png": b""
        for split, per_class in counts.items()
        for c, n in per_class.items()
        for i in range(n)
    }
    upload_dataset(buckets.s3, buckets.data, counts=counts, bodies=bodies)

    with pytest.raises(DatasetInvalid) as error:
        run(app, context)

    for split in ("train", "valid", "test"):
        assert f"split {split} has no readable image" in str(error.value)


@pytest.mark.parametrize("kind", ["truncated_png", "garbage", "png_magic_only", "bomb_png"])
def test_validate_dataset_unreadable_kinds_count_against_the_minimum(app, buckets, context, kind):
    """valid/ needs 2 readable images per class; one of 2 damaged leaves too few."""
    upload_dataset(buckets.s3, buckets.data, bodies={"valid/000.zero/0001.png": MESSY[kind]})

    with pytest.raises(DatasetInvalid, match=r"class 000.zero has 1 readable images in valid/"):
        run(app, context)


def test_validate_dataset_single_image_class_is_refused(app, buckets, context):
    counts = {
        "train": {"000.zero": 5, "001.one": 1},
        "valid": {"000.zero": 2, "001.one": 2},
        "test": {"000.zero": 2, "001.one": 2},
    }
    upload_dataset(buckets.s3, buckets.data, counts=counts)

    with pytest.raises(DatasetInvalid, match=r"class 001.one has 1 readable images in train/"):
        run(app, context)


def test_validate_dataset_minimum_comes_from_the_template_parameter(
    app, buckets, context, monkeypatch
):
    """MinTrainImagesPerClass=1 lets a one-image class through, with a warning."""
    counts = {
        "train": {"000.zero": 5, "001.one": 1},
        "valid": {"000.zero": 2, "001.one": 2},
        "test": {"000.zero": 2, "001.one": 2},
    }
    upload_dataset(buckets.s3, buckets.data, counts=counts)
    monkeypatch.setenv("MIN_TRAIN_IMAGES_PER_CLASS", "1")

    run(app, context)

    record = validation_record(buckets)
    assert record["minimum_images_per_class"] == {"train": 1, "valid": 2, "test": 2}
    assert any(
        w.startswith("small classes in train/") and "001.one (1)" in w for w in record["warnings"]
    )


def test_validate_dataset_smoke_test_image_is_plain(app, buckets, context):
    """16-bit, CMYK, palette and LA test images are readable (trained on) but never sent."""
    bodies = {
        "test/000.zero/0000.png": MESSY["sixteen_bit_png"],
        "test/000.zero/0001.png": MESSY["cmyk_jpeg"],
        "test/001.one/0000.png": MESSY["palette_transparency_png"],
        "test/001.one/0001.png": MESSY["la_png"],
        "train/000.zero/0000.png": MESSY["cmyk_jpeg"],
    }
    counts = {
        "train": {"000.zero": 5, "001.one": 5},
        "valid": {"000.zero": 2, "001.one": 2},
        "test": {"000.zero": 2, "001.one": 3},
    }
    upload_dataset(buckets.s3, buckets.data, counts=counts, bodies=bodies)

    result = run(app, context)

    assert result["sample_image"] == {
        "key": "datasets/digits/test/001.one/0002.png",
        "class_index": 1,
        "class_name": "001.one",
    }
    record = validation_record(buckets)
    assert record["images"]["unreadable_count"] == 0
    assert record["smoke_test_images"][0]["key"] == "datasets/digits/test/001.one/0002.png"


def test_validate_dataset_near_its_timeout_stops_with_the_numbers_to_act_on(app, buckets, context):
    """Too little time left ends in DatasetTooLarge (not Sandbox.Timedout), with the counts."""
    upload_dataset(buckets.s3, buckets.data)
    context.remaining_ms = int(app.DEADLINE_MARGIN_S * 1000) - 1

    with pytest.raises(DatasetTooLarge) as error:
        run(app, context)

    message = str(error.value)
    assert re.search(r"read \d+ of 18 images in \d+ s", message), message
    assert "MemorySize" in message and "Timeout" in message, message


def test_validate_dataset_lists_every_page(app, buckets, context):
    """More objects than one ListObjectsV2 page (1,000) are all counted."""
    per_class = 1_100
    counts = {
        "train": {"000.zero": per_class, "001.one": 5},
        "valid": {"000.zero": 2, "001.one": 2},
        "test": {"000.zero": 2, "001.one": 2},
    }
    prefix = "datasets/digits/"
    for split, classes in counts.items():
        for class_name, n in classes.items():
            for i in range(n):
                key = f"{prefix}{split}/{class_name}/{i:04d}.png"
                buckets.s3.put_object(Bucket=buckets.data, Key=key, Body=b"x")

    listed = list(app.list_relative_keys(buckets.data, prefix))

    assert len(listed) == sum(sum(c.values()) for c in counts.values())
    assert app.summarize_objects(listed).counts[("train", "000.zero")] == per_class
