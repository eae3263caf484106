"""Packing and publishing the training source, the same way for AWS and the local cloud.

Training jobs run `training/train.py` from `s3://<artifacts>/code/training/sourcedir.tar.gz`
(the SageMaker framework-container convention), and the Lambdas read the metric regexes from
`metric_definitions.json` beside it, so the regexes always belong to the code that prints the
lines. See docs/contracts.md.
"""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from pipeline_common import metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING_DIR = REPO_ROOT / "training"
SOURCE_KEY = "code/training/sourcedir.tar.gz"
METRICS_KEY = "code/training/metric_definitions.json"


# Shipped inside the source archive instead of installed by pip:
# - smdebug 1.0.34 (its last release) declares protobuf<=3.20.3, which pip would force onto the
#   training image and break its sagemaker-training (protobuf>=5.28.1). Its code works with the
#   image's protobuf 6 on protobuf's pure-Python backend (train.py selects it);
#   docs/training-image.md has the numbers.
# - pipeline_common, for pipeline_common.metrics: the metric lines train.py prints and the
#   regexes that read them have one home, shared with the Lambdas and the report. train.py
#   imports only that module, which needs nothing beyond the standard library.
# - captum 0.8.0 (requirements/captum.txt) for Grad-CAM (training/explain.py): it declares
#   numpy<2.0, which pip would force onto the image's numpy 2.x; its Grad-CAM runs on numpy 2.
#   train.py copies it on into the model's code/ (explain.copy_serving_code).
VENDORED_PACKAGES = ("smdebug", "pipeline_common", "captum")


def vendored_package_dir(name: str) -> Path:
    """The installed package folder of `name` in this (the packer's) environment."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{name} is not installed here; run `make venv`")
    return Path(next(iter(spec.submodule_search_locations)))


def pack_training_source(source_dir: Path = TRAINING_DIR) -> bytes:
    """training/ as a tar.gz with train.py at its root, plus the vendored packages (see
    VENDORED_PACKAGES); caches and tests left out."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        add_tree(archive, source_dir, Path("."))
        for name in VENDORED_PACKAGES:
            add_tree(archive, vendored_package_dir(name), Path(name))
    return buffer.getvalue()


def add_tree(archive: tarfile.TarFile, folder: Path, prefix: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            name = (prefix / path.relative_to(folder)).as_posix()
            archive.add(path, arcname=name, recursive=False)


def metric_definitions() -> list[dict[str, str]]:
    """The regexes of pipeline_common.metrics, the module train.py prints its lines with."""
    return [dict(item) for item in metrics.METRIC_DEFINITIONS]


def publish_training_source(s3: Any, bucket: str) -> dict[str, str]:
    """Upload the source archive and the metric definitions; returns their S3 URIs."""
    s3.put_object(Bucket=bucket, Key=SOURCE_KEY, Body=pack_training_source())
    s3.put_object(
        Bucket=bucket,
        Key=METRICS_KEY,
        Body=json.dumps(metric_definitions(), indent=2).encode(),
        ContentType="application/json",
    )
    return {"source": f"s3://{bucket}/{SOURCE_KEY}", "metrics": f"s3://{bucket}/{METRICS_KEY}"}
