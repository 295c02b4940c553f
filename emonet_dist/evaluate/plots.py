"""Figures for evaluation outputs, drawn on matplotlib's Agg canvas.

Figures are built as ``matplotlib.figure.Figure`` with an explicit ``FigureCanvasAgg`` instead of through
``pyplot``: no global backend switch, no figure registry to leak, and safe from worker threads and headless
machines alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def new_figure(size: tuple[float, float]):
    """A ``Figure`` of ``size`` inches (width, height) on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def delta_heatmap(corpora: list[str], candidates: list[str], delta: np.ndarray, marks: list[list[str]],
                  path: str | Path, title: str = "") -> Path:
    """Figure-7-style heatmap of UAR differences (candidate − baseline) in percentage points.

    Args:
        corpora: row names (R of them).
        candidates: column names (K of them).
        delta: ``(R, K)`` UAR deltas in percentage points; NaN for missing cells.
        marks: ``R x K`` strings, ``"+"``/``"−"`` for significant cells, ``""`` otherwise.
        path: PNG file to write.
    Significant cells get their mark next to the number and a black frame, so they stand out in print too.
    """
    from matplotlib.patches import Rectangle

    delta = np.asarray(delta, dtype=float)
    r, k = delta.shape
    fig = new_figure((max(4.5, 2.6 + 1.3 * k), max(3.0, 1.8 + 0.38 * r)))
    ax = fig.add_subplot(1, 1, 1)
    finite = np.abs(delta[np.isfinite(delta)])
    # symmetric limits, so white is exactly "no change" and red/blue read as worse/better
    vmax = max(float(finite.max()) if finite.size else 0.0, 1.0)
    im = ax.imshow(np.ma.masked_invalid(delta), cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
    for i in range(r):
        for j in range(k):
            v = delta[i, j]
            if math.isnan(v):
                continue
            mark = marks[i][j]
            ax.text(j, i, f"{v:+.1f}{mark}", ha="center", va="center", fontsize=8,
                    fontweight="bold" if mark else "normal", color="white" if abs(v) > 0.6 * vmax else "black")
            if mark:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
    ax.set_xticks(range(k), labels=candidates, rotation=30, ha="right")
    ax.set_yticks(range(r), labels=corpora)
    ax.set_title(title or "test UAR − baseline UAR [pp]\nframed: McNemar significant", fontsize=9)
    fig.colorbar(im, ax=ax, label="UAR delta [pp]")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
