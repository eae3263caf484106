"""The model's monitoring baseline, computed on the validation split after training.

See pipeline_common/baseline.py for what it holds and who reads it. The embedding projection
is a PCA of the validation split's penultimate-layer features: the directions in which this
model's view of in-distribution images varies most, so that a shift in what production sends
shows in few numbers per request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pipeline_common.baseline import (
    BASELINE_FILE,
    MAX_SAMPLE,
    PROJECTION_DIM,
    baseline_record,
    image_statistics,
)
from torch import nn
from torch.utils.data import DataLoader

try:  # imported as part of the `training` package (tests, tooling)
    from . import data, inference
except ImportError:  # run as a script from inside training/ (SageMaker's entry point)
    import data
    import inference


def features_and_probabilities(
    network: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features and class probabilities of every image, in the loader's order."""
    network.eval()
    features, probabilities = [], []
    with torch.inference_mode():
        for images, _ in loader:
            logits, batch_features = inference.forward_with_features(network, images.to(device))
            features.append(batch_features.cpu())
            probabilities.append(torch.softmax(logits, dim=1).cpu())
    return torch.cat(features), torch.cat(probabilities)


def pca_projection(features: torch.Tensor) -> dict[str, Any]:
    """The features' mean, first principal directions (rows) and their spreads, and the mean
    norm of the residual outside them: what inference.project whitens with."""
    mean = features.mean(dim=0)
    centered = features - mean
    _, singular, directions = torch.linalg.svd(centered, full_matrices=False)
    dim = min(PROJECTION_DIM, features.shape[0] - 1, features.shape[1])
    components = directions[:dim]
    scale = (singular[:dim] / max(features.shape[0] - 1, 1) ** 0.5).clamp(min=1e-6)
    residual = (centered - centered @ components.T @ components).norm(dim=1)
    return {
        "mean": rounded(mean),
        "components": [rounded(row) for row in components],
        "scale": rounded(scale),
        "residual_scale": max(round(float(residual.mean()), 6), 1e-6),
    }


def rounded(values: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in values]


def raw_image_statistics(paths: list[Path]) -> list[dict[str, float]]:
    """Statistics of the files as they are (mode and size before any conversion)."""
    rows = []
    for path in paths[:MAX_SAMPLE]:
        with Image.open(path, formats=data.ALLOWED_FORMATS) as image:
            image.load()
            rows.append(image_statistics(image))
    return rows


def compute_baseline(
    network: nn.Module, loader: DataLoader, split: data.Split, classes: list[str], device
) -> dict[str, Any] | None:
    """The baseline record, or None when the split is too small to have a spread (< 2)."""
    if len(split.samples) < 2:
        return None
    features, probabilities = features_and_probabilities(network, loader, device)
    projection = pca_projection(features)
    tensors = {key: torch.tensor(projection[key]) for key in inference.PROJECTION_KEYS}
    projected = inference.project(features, tensors)
    confidence, predictions = probabilities.max(dim=1)
    return baseline_record(
        classes,
        [int(p) for p in predictions],
        [float(c) for c in confidence],
        projection,
        [[round(float(v), 5) for v in row] for row in projected[:MAX_SAMPLE]],
        raw_image_statistics([path for path, _ in split.samples]),
    )


def write_model_baseline(
    model_dir: Path, loader: DataLoader, split: data.Split, classes: list[str], out_dir: Path
) -> None:
    """Compute the baseline with the network as the endpoint loads it (model_fn: no debug
    hook attached) and keep it with the model and in the job's output data."""
    served = inference.model_fn(str(model_dir))
    record = compute_baseline(served.network, loader, split, classes, served.device)
    if record is None:
        print(f"[baseline] skipped: {len(split.samples)} validation image(s)", flush=True)
        return
    write_baseline(record, model_dir, out_dir)
    print(f"[baseline] {record['count']} validation images -> {BASELINE_FILE}", flush=True)


def write_baseline(record: dict[str, Any], *directories: Path) -> None:
    text = json.dumps(record) + "\n"
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / BASELINE_FILE).write_text(text)
