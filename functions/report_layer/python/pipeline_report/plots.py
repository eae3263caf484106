"""The report's figures as PNG bytes (matplotlib's Agg backend: no display, no GUI toolkit).

Each function takes plain data and returns PNG bytes, so a figure can be checked or reused
without the HTML around it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from pipeline_report import analysis as an

STATUS_COLOURS = {
    "SUCCEEDED": "#2e7d32",
    "FAILED": "#c62828",
    "CAUGHT": "#ef6c00",
    "RUNNING": "#1565c0",
}
DPI = 100


def to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def gantt(rows: Sequence[an.TimelineRow]) -> bytes:
    """One bar row per state; a wait loop's visits are the segments of one row."""
    figure, axes = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.2))
    span = max((s + n for r in rows for s, n in r.segments), default=1.0) - min(
        (s for r in rows for s, _ in r.segments), default=0.0
    )
    shortest = max(span, 1e-3) / 400  # an instant state stays visible, never wider than this
    for index, row in enumerate(rows):
        colour = STATUS_COLOURS.get(row.status, "#757575")
        widths = [(start, max(length, shortest)) for start, length in row.segments]
        axes.broken_barh(widths, (index - 0.35, 0.7), facecolors=colour)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels([f"{r.name} (x{r.visits})" if r.visits > 1 else r.name for r in rows])
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the execution started")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title("State timeline (wait loops folded into one row)")
    return to_png(figure)


def objective_by_trial(
    values: Sequence[float | None], objective: str, objective_type: str
) -> bytes:
    """Objective of each trial in launch order, with the best-so-far line."""
    figure, axes = plt.subplots(figsize=(6, 3.6))
    order = list(range(1, len(values) + 1))
    scored = [(i, v) for i, v in zip(order, values, strict=True) if v is not None]
    axes.scatter([i for i, _ in scored], [v for _, v in scored], label="trial", zorder=3)
    running = an.best_so_far(values, objective_type)
    axes.step(
        order,
        [math.nan if v is None else v for v in running],
        where="post",
        color="#c62828",
        label="best so far",
    )
    axes.set_xlabel("trial (launch order)")
    axes.set_ylabel(objective)
    axes.set_xticks(order)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(f"{objective} per trial ({objective_type.lower()})")
    return to_png(figure)


def objective_by_learning_rate(
    rates: Sequence[float],
    values: Sequence[float],
    objective: str,
    log_scale: bool,
    name: str,
    search_range: tuple[float, float] | None = None,
) -> bytes:
    """Objective against the learning rate over the tuned range (log x for a log range)."""
    figure, axes = plt.subplots(figsize=(6, 3.6))
    axes.scatter(rates, values, zorder=3)
    low, high = search_range or (min(rates), max(rates))
    if log_scale:
        axes.set_xscale("log")
    ticks = _range_ticks(low, high, log_scale)
    axes.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    axes.xaxis.set_minor_formatter(NullFormatter())
    pad = (high / low) ** 0.05 if log_scale and low > 0 else None
    if pad:
        axes.set_xlim(low / pad, high * pad)
    axes.set_xlabel(f"{name} (log scale)" if log_scale else name)
    axes.set_ylabel(objective)
    axes.grid(alpha=0.3)
    axes.set_title(f"{objective} against the learning rate")
    return to_png(figure)


def _range_ticks(low: float, high: float, log_scale: bool, count: int = 5) -> list[float]:
    """Evenly spaced ticks over the range (geometrically on a log axis): matplotlib's own log
    ticks label every minor tick of a narrow range and the labels overlap."""
    if high <= low:
        return [low]
    if log_scale and low > 0:
        ratio = (high / low) ** (1 / (count - 1))
        return [low * ratio**i for i in range(count)]
    step = (high - low) / (count - 1)
    return [low + step * i for i in range(count)]


def training_curves(curves: an.Curves) -> bytes:
    """Loss and accuracy per epoch, train and valid side by side."""
    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(10, 3.6))
    for axes, metric, train, valid in (
        (loss, "loss", curves.train_loss, curves.valid_loss),
        (accuracy, "accuracy", curves.train_accuracy, curves.valid_accuracy),
    ):
        axes.plot(curves.epochs, _nan(train), marker="o", label="train")
        axes.plot(curves.epochs, _nan(valid), marker="o", label="valid")
        if metric == "loss" and _spread(train + valid) > 50:
            axes.set_yscale("log")  # a first epoch far off would flatten the rest
            metric = "loss (log scale)"
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.set_xticks(curves.epochs)
        axes.grid(alpha=0.3)
        axes.legend()
        axes.set_title(f"{metric.split(' ')[0]} per epoch")
    return to_png(figure)


def system_profile(
    times_s: Sequence[float],
    cpu_percent: Sequence[float],
    memory_mib: Sequence[float],
    gpu_percent: Sequence[float],
    cpu_count: int | None,
    memory_percent: Sequence[float] = (),
) -> bytes:
    """Local samples count CPU per core (cpu_count given); the Profiler's average the cores."""
    panels = 1 + bool(memory_mib)
    figure, axes_list = plt.subplots(panels, 1, figsize=(10, 2.6 * panels), sharex=True)
    axes_list = [axes_list] if panels == 1 else list(axes_list)
    cpu = axes_list[0]
    cpu.plot(
        times_s,
        cpu_percent,
        label="CPU % (100 = one core)" if cpu_count else "CPU % (mean of cores)",
    )
    if gpu_percent:
        cpu.plot(times_s, gpu_percent, label="GPU %")
    if memory_percent:
        cpu.plot(times_s, memory_percent, color="#6a1b9a", label="memory used %")
    if cpu_count:
        cpu.axhline(100 * cpu_count, color="#757575", linestyle="--", label=f"{cpu_count} cores")
    cpu.set_ylabel("utilisation %")
    cpu.grid(alpha=0.3)
    cpu.set_ylim(
        0, max([*cpu_percent, *gpu_percent, *memory_percent, 100 * (cpu_count or 1)]) * 1.25
    )
    cpu.legend(loc="upper left", ncols=3, fontsize=8)
    cpu.set_title("System profile of the retrain")
    if memory_mib:
        axes_list[1].plot(times_s, memory_mib, color="#6a1b9a")
        axes_list[1].set_ylabel("RSS MiB")
        axes_list[1].grid(alpha=0.3)
    axes_list[-1].set_xlabel("seconds since the training script started")
    return to_png(figure)


def epoch_times(epochs: Sequence[int], seconds: Sequence[float | None]) -> bytes:
    figure, axes = plt.subplots(figsize=(6, 3))
    axes.bar(epochs, [s or 0.0 for s in seconds], color="#00838f")
    axes.set_xlabel("epoch")
    axes.set_ylabel("seconds")
    axes.set_xticks(list(epochs))
    axes.grid(axis="y", alpha=0.3)
    axes.set_title("Time per epoch (train + validation)")
    return to_png(figure)


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    size = max(4.0, 0.45 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(matrix, cmap="Blues")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                colour = "white" if count > peak / 2 else "black"
                axes.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=8)
    axes.set_xticks(range(len(labels)))
    axes.set_xticklabels(labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)))
    axes.set_yticklabels(labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_title("Confusion matrix on the test split")
    return to_png(figure)


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _spread(values: Sequence[float | None]) -> float:
    """max / min of the positive values (1 when there are none)."""
    positive = [v for v in values if v is not None and v > 0]
    return max(positive) / min(positive) if positive else 1.0
