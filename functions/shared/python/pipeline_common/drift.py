"""Does what the endpoint is asked still look like what its model was validated on?

The monitor (functions/monitor_endpoint) computes, from the captured requests and answers, the
features the baseline holds (pipeline_common.baseline) and runs one two-sample test per
feature, all from scipy.stats (no statistics written here, only how they are called):

- embedding: the model's projected penultimate features, multivariate. Maximum mean
  discrepancy with a Gaussian kernel (bandwidth: the median distance, the usual heuristic),
  its p-value from ``permutation_test`` over the pooled samples. This is the test that sees
  a shift the model itself notices, whatever the pixels do;
- predictions: the predicted classes' counts against the baseline's (``chi2_contingency``);
- confidence: the top probability, one-sided (``mannwhitneyu``: production lower);
- brightness, contrast: the grey levels' mean and spread (``ks_2samp``).

Each test is judged at ALPHA divided by the number of tests (Bonferroni), so a clean batch is
called drifted at most ALPHA of the time however many features there are. torchdrift and
alibi-detect do the same tests but bring a second deep-learning stack into a Lambda; scipy is
already what the report's numpy/matplotlib layer sits on.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline_common.baseline import IMAGE_FEATURES, image_statistics
from pipeline_common.capture import CapturedRequest

ALPHA = 0.01
PERMUTATIONS = 1999  # smallest p-value 1/2000, below ALPHA / 5
MIN_REQUESTS = 20  # fewer captured answers than this are not judged
CHECKS = ("embedding", "predictions", "confidence", "brightness", "contrast")


@dataclass
class Features:
    """What one batch of requests looked like, in the baseline's terms."""

    requests: list[CapturedRequest] = field(default_factory=list)  # those with an embedding
    predictions: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    embeddings: list[list[float]] = field(default_factory=list)
    images: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Finding:
    check: str
    test: str
    statistic: float
    p_value: float
    threshold: float
    drifted: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def decoded_statistics(data: bytes) -> dict[str, float] | None:
    """The image statistics of one captured request body; None if it is not a readable image
    (the model server refused it, so it has no answer either) or too large to decode."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image_statistics(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def features_of(requests: Iterable[CapturedRequest], model: str | None = None) -> Features:
    """The baseline's features of the requests answered by ``model`` (all when None)."""
    features = Features(images={name: [] for name in IMAGE_FEATURES})
    for request in requests:
        answer = request.answer()
        if not answer or (model is not None and answer.get("model") != model):
            continue
        try:
            prediction = int(answer["class_index"])
            confidence = float(answer["top_k"][0]["probability"])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        features.predictions.append(prediction)
        features.confidence.append(confidence)
        if isinstance(answer.get("embedding"), list):
            features.embeddings.append([float(v) for v in answer["embedding"]])
            features.requests.append(request)
        stats = decoded_statistics(request.request.data) if request.request else None
        for name, value in (stats or {}).items():
            features.images[name].append(value)
    return features


def mmd_statistic(kernel: Any, x: Any, y: Any) -> float:
    """Biased squared MMD of the samples indexed by ``x`` and ``y`` in one kernel matrix."""
    return float(kernel[x][:, x].mean() + kernel[y][:, y].mean() - 2.0 * kernel[x][:, y].mean())


def embedding_test(baseline: list[list[float]], batch: list[list[float]], seed: int) -> Finding:
    import numpy as np
    from scipy.spatial.distance import cdist
    from scipy.stats import permutation_test

    pooled = np.asarray(baseline + batch, dtype=float)
    distances = cdist(pooled, pooled, "sqeuclidean")
    bandwidth = float(np.median(distances[distances > 0])) if (distances > 0).any() else 1.0
    kernel = np.exp(-distances / bandwidth)
    x, y = np.arange(len(baseline)), np.arange(len(baseline), len(pooled))
    result = permutation_test(
        (x, y),
        lambda a, b: mmd_statistic(kernel, a, b),
        permutation_type="independent",
        vectorized=False,
        n_resamples=PERMUTATIONS,
        alternative="greater",
        random_state=seed,
    )
    return finding(
        "embedding",
        "MMD (Gaussian kernel, permutation)",
        result.statistic,
        result.pvalue,
        f"{len(batch)} requests vs {len(baseline)} validation images, "
        f"{pooled.shape[1]}-d projected embeddings",
    )


def predictions_test(baseline_counts: list[int], predictions: list[int]) -> Finding:
    from scipy.stats import chi2_contingency

    counts = [0] * len(baseline_counts)
    for index in predictions:
        if 0 <= index < len(counts):
            counts[index] += 1
    kept = [i for i in range(len(counts)) if counts[i] + baseline_counts[i] > 0]
    if len(kept) < 2:
        return finding("predictions", "chi-square", 0.0, 1.0, "fewer than 2 classes seen")
    result = chi2_contingency([[baseline_counts[i] for i in kept], [counts[i] for i in kept]])
    shares = {i: round(counts[i] / max(len(predictions), 1), 3) for i in kept}
    return finding(
        "predictions", "chi-square", result.statistic, result.pvalue, f"class shares {shares}"
    )


def confidence_test(baseline: list[float], batch: list[float]) -> Finding:
    import numpy as np
    from scipy.stats import mannwhitneyu

    result = mannwhitneyu(batch, baseline, alternative="less")
    return finding(
        "confidence",
        "Mann-Whitney U (lower)",
        result.statistic,
        result.pvalue,
        f"median {np.median(batch):.3f} vs {np.median(baseline):.3f} on validation",
    )


def distribution_test(name: str, baseline: list[float], batch: list[float]) -> Finding:
    import numpy as np
    from scipy.stats import ks_2samp

    result = ks_2samp(batch, baseline)
    return finding(
        name,
        "Kolmogorov-Smirnov",
        result.statistic,
        result.pvalue,
        f"mean {np.mean(batch):.3f} vs {np.mean(baseline):.3f} on validation",
    )


def finding(check: str, test: str, statistic: float, p_value: float, detail: str) -> Finding:
    threshold = ALPHA / len(CHECKS)
    p = float(p_value)
    return Finding(check, test, round(float(statistic), 6), p, threshold, p < threshold, detail)


def unusual(
    baseline: list[list[float]], batch: list[list[float]], top: int = 6
) -> list[tuple[int, float]]:
    """The batch's requests least like the validation data, most unusual first: (index in the
    batch, score), the score being minus the log of the Gaussian-kernel density the baseline's
    embeddings give the request (same bandwidth rule as the embedding test)."""
    import numpy as np
    from scipy.spatial.distance import cdist

    reference, points = np.asarray(baseline, dtype=float), np.asarray(batch, dtype=float)
    within = cdist(reference, reference, "sqeuclidean")
    bandwidth = float(np.median(within[within > 0])) if (within > 0).any() else 1.0
    density = np.exp(-cdist(points, reference, "sqeuclidean") / bandwidth).mean(axis=1)
    scores = -np.log(np.maximum(density, 1e-300))
    order = np.argsort(-scores)[:top]
    return [(int(i), round(float(scores[i]), 3)) for i in order]


def compare(baseline: dict[str, Any], features: Features, seed: int = 0) -> list[Finding]:
    """One finding per check (those the batch has data for), each with its verdict."""
    found = []
    if features.embeddings:
        found.append(embedding_test(baseline["embedding"]["sample"], features.embeddings, seed))
    if features.predictions:
        found.append(predictions_test(baseline["prediction_counts"], features.predictions))
    if features.confidence:
        found.append(confidence_test(baseline["confidence"], features.confidence))
    for name in ("brightness", "contrast"):
        if features.images.get(name):
            found.append(distribution_test(name, baseline["images"][name], features.images[name]))
    return found
