"""Figures shared by the stages (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from successor_heads.core.atomic import atomic_path  # noqa: E402


def save(fig, path: str | os.PathLike) -> None:
    """Save ``fig`` to ``path`` atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight")
    plt.close(fig)


def heatmap(panels: dict[str, np.ndarray], title: str, path, cbar_label: str = "successor score") -> None:
    """One layer-by-head heatmap per panel; ``panels`` maps a panel title to ``[n_layers, n_heads]``."""
    n = len(panels)
    first = next(iter(panels.values()))
    n_layers, n_heads = first.shape
    fig, axes = plt.subplots(1, n, figsize=(1.2 + n * max(2.5, 0.35 * n_heads + 1.2), max(3, 0.22 * n_layers + 1.2)),
                             squeeze=False)
    for ax, (name, m) in zip(axes[0], panels.items()):
        vmin, vmax = (0, 1) if np.nanmax(m) <= 1 and np.nanmin(m) >= 0 else (np.nanmin(m), np.nanmax(m))
        im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def bars(labels: list[str], values: np.ndarray, title: str, path, ylabel: str = "successor score",
         hline: float | None = None, chance: float | None = None) -> None:
    """A bar chart of ``values [n]`` labelled ``labels``; ``hline`` (dashed grey, the threshold) and
    ``chance`` (dotted red, the chance level) are drawn across it when given."""
    fig, ax = plt.subplots(figsize=(max(4, 0.3 * len(labels) + 1), 3.2))
    ax.bar(range(len(labels)), values, color="tab:blue")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    if hline is not None:
        ax.axhline(hline, color="grey", ls="--", lw=0.8, label="threshold")
    if chance is not None:
        ax.axhline(chance, color="tab:red", ls=":", lw=1.0, label=f"chance, pair-weighted ({chance:.3f})")
    if hline is not None or chance is not None:
        ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=10)
    save(fig, path)
