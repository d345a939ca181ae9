#!/usr/bin/env python3
"""Draws gengate-bench's figures: each argument is a figure's JSON (written by the bench), and
its picture goes next to it with the extension .png. A figure is lines of (x, y) points:
{"name", "title", "x_label", "y_label", "x_log", "y_log", "x_percentile", "series": [{"label", "x", "y"}]}
(a null y is a missing reading). With x_percentile, x (0-100) is drawn as -log10(1 - x/100), so
that the tail (90, 99, 99.9, 99.99) is as wide as the rest."""
import json
import math
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def draw(path: pathlib.Path) -> pathlib.Path:
    figure = json.loads(path.read_text())
    fig, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    for series in figure["series"]:
        points = [(x, y) for x, y in zip(series["x"], series["y"]) if y is not None and not math.isnan(y)]
        if not points:
            continue
        xs, ys = zip(*points)
        if figure.get("x_percentile"):
            xs = [-math.log10(max(1e-6, 1 - x / 100)) for x in xs]
        few = len(points) <= 12
        axes.plot(xs, ys, marker="o" if few else None, linewidth=1.5, label=series["label"])
        if few:
            for x, y in zip(xs, ys):
                axes.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if figure.get("x_log"):
        axes.set_xscale("log")
    if figure.get("x_percentile"):
        ticks = [0, 50, 90, 99, 99.9, 99.99]
        axes.set_xticks([-math.log10(1 - t / 100) for t in ticks])
        axes.set_xticklabels([f"{t:g}" for t in ticks])
    if figure.get("y_log"):
        axes.set_yscale("log")
    axes.set_title(figure["title"])
    axes.set_xlabel(figure["x_label"])
    axes.set_ylabel(figure["y_label"])
    axes.grid(True, which="both", alpha=0.3)
    if not figure.get("y_log"):
        axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    fig.tight_layout()
    picture = path.with_suffix(".png")
    fig.savefig(picture)
    plt.close(fig)
    return picture


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(draw(pathlib.Path(argument)))
