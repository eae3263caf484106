"""The monitoring baseline: what a model version saw on its validation split, kept with it.

train.py computes it once, after training, on the validation split: images the model did not
learn from that look like its training data. monitor_endpoint computes the same features from
the requests the endpoint captured and compares the two (pipeline_common.drift). The features:

- ``predictions``: how often each class was predicted;
- ``confidence``: the top probability of each answer;
- ``embedding``: the network's penultimate-layer features as ``PROJECTION_DIM`` principal
  coordinates of the validation features, each divided by its validation spread, plus the
  norm of the residual outside them (divided by its validation mean): a shift shows in the
  coordinates or, for inputs unlike anything in validation, in the residual. The projection
  (``mean``, ``components``, ``scale``, ``residual_scale``) travels with the model, so the
  model server answers every request with its embedding and the monitor needs no network of
  its own; a sample of the validation embeddings is kept;
- ``images``: per image, width, height, channels and grey-level brightness and contrast.

One file, ``baseline.json``: in the model directory (the model server reads the projection) and
in the job's output data (RegisterModel copies it next to the run's records and names it in the
registry version's DriftCheckBaselines).
"""

from __future__ import annotations

from typing import Any

BASELINE_FILE = "baseline.json"
BASELINE_VERSION = 1
PROJECTION_DIM = 16
MAX_SAMPLE = 1000  # validation images kept per feature (the file stays a few hundred KB)
IMAGE_FEATURES = ("width", "height", "channels", "brightness", "contrast")


def image_statistics(image: Any) -> dict[str, float]:
    """Size, channels and the grey levels' mean (brightness) and spread (contrast), in 0..1.

    ``image`` is a PIL image as it was decoded (before any resizing), so a production image of
    another size or mode shows as such."""
    from PIL import ImageStat

    grey = image.convert("L")
    stat = ImageStat.Stat(grey)
    return {
        "width": float(image.width),
        "height": float(image.height),
        "channels": float(len(image.getbands())),
        "brightness": round(stat.mean[0] / 255.0, 6),
        "contrast": round(stat.stddev[0] / 255.0, 6),
    }


def image_columns(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-image rows -> one list per feature (the baseline's and the monitor's layout)."""
    return {name: [row[name] for row in rows] for name in IMAGE_FEATURES}


def baseline_record(
    classes: list[str],
    predictions: list[int],
    confidence: list[float],
    projection: dict[str, Any],
    embeddings: list[list[float]],
    images: list[dict[str, float]],
) -> dict[str, Any]:
    counts = [0] * len(classes)
    for index in predictions:
        counts[index] += 1
    return {
        "version": BASELINE_VERSION,
        "split": "valid",
        "count": len(predictions),
        "classes": classes,
        "prediction_counts": counts,
        "confidence": [round(c, 6) for c in confidence[:MAX_SAMPLE]],
        "embedding": {**projection, "sample": embeddings[:MAX_SAMPLE]},
        "images": image_columns(images[:MAX_SAMPLE]),
    }
