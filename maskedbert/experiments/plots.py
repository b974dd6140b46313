"""Shared plotting helpers (matplotlib, Agg backend: no display needed). Each writes one PNG atomically."""
from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from maskedbert._atomic import atomic_path

__all__ = ["save_figure", "box_plot", "layer_of", "layer_grad_norms", "grad_norm_plot", "loss_vs_metric_plot",
           "plot_metrics_vs_sparsity", "FAILED_COLOR", "SUCCESS_COLOR"]

FAILED_COLOR, SUCCESS_COLOR = "tab:red", "tab:blue"


def save_figure(fig, path: str, dpi: int = 120) -> str:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def box_plot(values_by_config: Mapping[str, Sequence[float]], path: str, ylabel: str,
             baseline: float | None = None, title: str | None = None) -> str:
    """Distribution of a metric over seeds, one box per configuration, each seed drawn as a dot."""
    if not values_by_config:
        raise ValueError("values_by_config must not be empty")
    names = list(values_by_config)
    data = [[v for v in values_by_config[n] if v is not None and math.isfinite(v)] for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 1.5), 4.0))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20 if len(names) > 3 else 0)
    for i, values in enumerate(data, start=1):
        offsets = [i + 0.12 * ((j % 5) - 2) / 2 for j in range(len(values))]
        ax.scatter(offsets, values, s=12, alpha=0.7, color=SUCCESS_COLOR, zorder=3)
    if baseline is not None:
        ax.axhline(baseline, color=FAILED_COLOR, linestyle="--", linewidth=1, label="majority baseline")
        ax.legend(loc="best", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} over seeds")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def layer_of(parameter_name: str) -> str:
    """Group name of a parameter: "layer 3", "embeddings", "pooler", "classifier" or its first component."""
    match = re.search(r"\.layers?\.(\d+)\.", parameter_name)
    if match:
        return f"layer {int(match.group(1))}"
    for group in ("embeddings", "pooler", "classifier"):
        if group in parameter_name:
            return group
    return parameter_name.split(".")[0]


def _group_order(name: str) -> tuple:
    if name == "embeddings":
        return (0, 0)
    if name.startswith("layer "):
        return (1, int(name.split()[1]))
    return (2, {"pooler": 0, "classifier": 1}.get(name, 2), name)


def layer_grad_norms(records: Sequence[Mapping[str, Any]]) -> tuple[list[int], dict[str, list[float]]]:
    """Steps and, per layer group, the L2 norm of the gradient (from train records' grad_norms)."""
    steps: list[int] = []
    per_group: dict[str, list[float]] = {}
    for record in records:
        norms = record.get("grad_norms")
        if record.get("type") != "train" or not norms:
            continue
        squares: dict[str, float] = {}
        for name, value in norms.items():
            value = float(value)
            squares[layer_of(name)] = squares.get(layer_of(name), 0.0) + value * value
        steps.append(int(record["step"]))
        for group in set(per_group) | set(squares):
            per_group.setdefault(group, [math.nan] * (len(steps) - 1)).append(math.sqrt(squares.get(group, math.nan)))
    return steps, per_group


def grad_norm_plot(runs: Sequence[tuple[Sequence[Mapping[str, Any]], bool]], path: str, max_panels: int = 6,
                   title: str = "gradient norm per layer: failed vs successful runs") -> str:
    """One panel per selected layer group; each run a line, red when it failed (runs: (log records, failed))."""
    parsed = [(layer_grad_norms(records), failed) for records, failed in runs]
    groups = sorted({g for (_, per_group), _ in parsed for g in per_group}, key=_group_order)
    if not groups:
        raise ValueError("no gradient norms in the run logs (log_grad_norms was off?)")
    if len(groups) > max_panels:  # evenly spaced, keeping the first and the last
        picks = sorted({round(i * (len(groups) - 1) / (max_panels - 1)) for i in range(max_panels)})
        groups = [groups[i] for i in picks]
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, group in zip(axes.flat, groups):
        for (steps, per_group), failed in parsed:
            if group in per_group:
                ax.plot(steps, per_group[group], color=FAILED_COLOR if failed else SUCCESS_COLOR, alpha=0.6, lw=1)
        ax.set_title(group, fontsize=10)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    axes[0][0].set_ylabel("gradient L2 norm")
    handles = [plt.Line2D([], [], color=SUCCESS_COLOR, label="successful"),
               plt.Line2D([], [], color=FAILED_COLOR, label="failed")]
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def loss_vs_metric_plot(runs: Sequence[tuple[Sequence[Mapping[str, Any]], bool, float | None]], path: str,
                        metric_name: str, baseline: float | None = None) -> str:
    """Left: training loss over steps per run. Right: final training loss against final dev metric.

    runs: (log records, failed, final dev metric) per run.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for records, failed, final_metric in runs:
        train = [(r["step"], float(r["loss"])) for r in records if r.get("type") == "train" and "loss" in r]
        color = FAILED_COLOR if failed else SUCCESS_COLOR
        if train:
            left.plot([s for s, _ in train], [v for _, v in train], color=color, alpha=0.6, lw=1)
            if final_metric is not None and math.isfinite(train[-1][1]):
                right.scatter(train[-1][1], final_metric, color=color, s=18)
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.set_title("training loss")
    left.grid(alpha=0.3)
    right.set_xlabel("final training loss")
    right.set_ylabel(f"final dev {metric_name}")
    right.set_title(f"training loss vs dev {metric_name}")
    if baseline is not None:
        right.axhline(baseline, color=FAILED_COLOR, linestyle="--", lw=1, label="majority baseline")
        right.legend(fontsize=8)
    right.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_metrics_vs_sparsity(rows: Sequence[Mapping], path: str, *, metrics: Sequence[tuple[str, str]],
                             series_key: str = "method", title: str | None = None,
                             references: Sequence[Mapping] = (), reference_key: str = "loss") -> str:
    """One panel per (metric key, axis label): metric vs sparsity, one line per series; PNG written atomically.

    `references` (e.g. dense models) are drawn as dashed horizontal lines labelled by `reference_key`.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    series: dict[str, list[Mapping]] = defaultdict(list)
    for row in rows:
        series[str(row[series_key])].append(row)
    for ax, (key, label) in zip(axes[0], metrics):
        for name, points in sorted(series.items()):
            points = sorted((p for p in points if p.get(key) is not None), key=lambda p: p["sparsity"])
            if points:
                ax.plot([100 * p["sparsity"] for p in points], [100 * p[key] for p in points], marker="o", label=name)
        for i, ref in enumerate(references):
            if ref.get(key) is not None:
                ax.axhline(100 * ref[key], linestyle="--", linewidth=1, color=f"C{(i + len(series)) % 10}",
                           label=f"dense {ref[reference_key]}")
        ax.set_xlim(-2, 100)  # the whole sparsity range: single-level runs stay readable
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel(f"{label} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path
