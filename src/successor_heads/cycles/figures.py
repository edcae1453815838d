"""Figures of the ``cycles`` stage: the successor head's input and output circles with its image
of each item, and a layer x head heatmap of the rotation score per mode and task (ours)."""

from __future__ import annotations

import os

import numpy as np

from successor_heads.core.plots import plt, save


def circles(panels: list[dict], title: str, path: str | os.PathLike) -> None:
    """One row per task, two panels: the input circle (each item at its coordinates in the fitted
    plane, joined in cycle order, the wrap-around dashed) and the output circle (the ``W_U``
    columns' coordinates) with an arrow from each item to the head's image of it (the phase of
    the head's masked frequency-1 logits for that input, at the circle's mean radius).

    ``panels``: dicts with ``task``, ``labels [n]``, ``input_xy [n, 2]``, ``output_xy [n, 2]``,
    ``image_phase [n]`` (radians, NaN: no phase), ``input_r2``, ``output_r2``, ``rotation``.
    Raises nothing beyond matplotlib's.
    """
    fig, axes = plt.subplots(len(panels), 2, figsize=(8, 3.8 * len(panels)), squeeze=False, layout="constrained")
    for (ax_in, ax_out), p in zip(axes, panels):
        for ax, xy, name in ((ax_in, p["input_xy"], f"input circle (R^2 {p['input_r2']:.2f})"),
                             (ax_out, p["output_xy"], f"W_U circle (R^2 {p['output_r2']:.2f}), head's image, "
                                                      f"rotation {p['rotation']:.2f}")):
            ax.plot(xy[:, 0], xy[:, 1], "-", color="0.7", lw=0.8)
            ax.plot(xy[[-1, 0], 0], xy[[-1, 0], 1], "--", color="0.7", lw=0.8)
            ax.scatter(xy[:, 0], xy[:, 1], c=np.arange(len(xy)), cmap="hsv", s=25, zorder=3)
            for (x, y), lab in zip(xy, p["labels"]):
                ax.annotate(lab.strip(), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_aspect("equal", "datalim")
            ax.set_title(f"{p['task']}: {name}", fontsize=8)
        radius = np.linalg.norm(p["output_xy"], axis=1).mean()
        for (x, y), phi in zip(p["output_xy"], p["image_phase"]):
            if np.isfinite(phi):
                ax_out.annotate("", (radius * np.cos(phi), radius * np.sin(phi)), (x, y),
                                arrowprops=dict(arrowstyle="->", color="tab:blue", lw=0.8, alpha=0.8))
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def rotation_heatmap(panels: dict[str, np.ndarray], title: str, path: str | os.PathLike) -> None:
    """Layer x head heatmaps of the rotation score on a fixed -1..1 scale (1: a one-step
    successor rotation, -1: a backward turn); ``panels`` maps a title to ``[n_layers, n_heads]``.
    Raises nothing beyond matplotlib's."""
    n = len(panels)
    cols = min(n, 4)
    rows = -(-n // cols)
    n_layers, n_heads = next(iter(panels.values())).shape
    w, h = max(2.4, 0.3 * n_heads + 1.2), max(2.8, 0.2 * n_layers + 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * w, rows * h), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, m) in zip(axes.flat, panels.items()):
        im = ax.imshow(m, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=list(axes.flat), fraction=0.03, label="rotation score")
    fig.suptitle(title, fontsize=10)
    save(fig, path)
