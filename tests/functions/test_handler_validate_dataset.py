"""validate_dataset: every layout problem named before any compute is spent."""

from __future__ import annotations

import json

import pytest
from handler_helpers import load_event, upload_dataset
from pipeline_common.errors import DatasetInvalid


@pytest.fixture
def app(load_handler, buckets):
    return load_handler("validate_dataset")


def run(app, context, **changes):
    return app.lambda_handler({**load_event("validate_dataset.json"), **changes}, context)


def test_validate_dataset_accepts_a_valid_data_set(app, buckets, context):
    upload_dataset(buckets.s3, buckets.data)

    result = run(app, context)

    assert result["name"] == "digits"
    assert result["counts"] == {"train": 6, "valid": 4, "test": 4}
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

    assert "train/001.one/: manifest says 3 images, bucket has 2" in str(error.value)
    assert "file_count is 14 but the bucket holds 13 images" in str(error.value)


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
