"""One figure style for the whole book: sizes drawn for the page, readable text, the same tick
formats, titles in words and legends off the data.

Every chapter calls :func:`book_style` once (in its setup cell) and draws multi-panel figures
with :func:`panels`; :mod:`minippo.plotting` draws its dashboards the same way.

**Sizes.** The rendered book's text column is 768 px wide on a 1280-px screen and 358 px on a
390-px phone. A figure is drawn at most :data:`WIDTH_PX` = 590 px wide (at :data:`DPI`), so a
desktop shows it at its drawn size (text at 9.5 pt = 13 px) and a phone at 358/590 = 61% of
it, never below the 60% that ``tests/test_look.py`` accepts. Panels go at most three to a row
(two is the default), more rows rather than narrower panels.

**Numbered captions and alt text** are not drawn: they are the cell's metadata, which myst-nb
turns into a numbered figure ("Figure 5.2") with a caption and the image's alt text::

    "metadata": {"mystnb": {"figure": {"name": "ch05-ablation", "caption": "What each detail buys."},
                            "image": {"alt": "Three panels: return, KL and clip fraction ..."}}}

:func:`figure_metadata` writes that dictionary; one figure per cell.

**How a chapter uses it** (phase 2 of issue 17 moves every chapter onto it)::

    mp.style.book_style()                       # once, in the setup cell
    fig, axes = mp.style.panels(4, per_row=2)   # never plt.subplots(1, 5, figsize=(16, 3))
    for ax, metric in zip(axes, ["ppo/kl_divergence", "ppo/clip_fraction", ...]):
        ax.plot(steps, history[metric], label="clip 0.2")
        ax.set_title(mp.style.title(metric))    # words, not metric keys
        mp.style.format_steps(ax)               # 0, 20k, 40k ticks
    mp.style.legend_below(fig)                  # one legend, under the panels, off the data
    plt.show()

and the cell's metadata is ``mp.style.figure_metadata("ch05-ablation", "caption ...", "alt ...")``
(``{numref}`ch05-ablation``` then reads "Figure 5.2"). A table is the cell's last expression
``mp.style.table(rows, digits={"KL": 4}, code=("function",))``: numbers for reading, no "-0.00",
no reprs; printouts of tensors, dicts and configs become such a table or a sentence
(``mp.prose.show``), and a listing is ``mp.prose.source(fn)`` (highlighted), not
``print(inspect.getsource(fn))``. ``tests/test_look.py`` measures the result at 1280 and 390 px.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from minippo.utils import check_range

__all__ = ["DPI", "WIDTH_PX", "WIDTH_IN", "RC", "TITLES", "book_style", "panels", "figure_size",
           "human_number", "format_steps", "title", "legend_below", "figure_metadata",
           "reading_number", "table"]

DPI = 100
WIDTH_PX = 590  # the widest PNG a figure makes, margins included
PAD_IN = 0.05   # the margin Jupyter's inline backend adds around the figure (bbox_inches="tight")
WIDTH_IN = WIDTH_PX / DPI - 2 * PAD_IN
PANEL_HEIGHT_IN = 2.3  # one row of panels; a figure of one row is a little taller (title, legend)
MAX_PER_ROW = 3

#: Matplotlib settings of the book's figures (:func:`book_style` applies them).
RC = {
    "figure.dpi": DPI,
    "savefig.dpi": "figure",
    "savefig.pad_inches": PAD_IN,
    "figure.figsize": (WIDTH_IN, 3.4),
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9.5,
    "legend.title_fontsize": 9.5,
    "figure.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
}

#: Panel titles and axis labels in words, for the metric names of the metric dictionary (book/metrics.md).
TITLES = {
    "global_step": "environment steps",
    "time/elapsed": "seconds of training",
    "time/steps_per_second": "environment steps per second",
    "rollout/episodic_return": "episodic return",
    "rollout/episode_length": "episode length",
    "ppo/policy_loss": "policy loss",
    "ppo/value_loss": "value loss",
    "ppo/entropy": "policy entropy",
    "ppo/kl_divergence": "KL divergence (old → new)",
    "ppo/clip_fraction": "clip fraction",
    "ppo/ratio_mean": "mean probability ratio",
    "ppo/ratio_std": "std of the probability ratio",
    "ppo/explained_variance": "explained variance",
    "ppo/value_pred_mean": "mean value prediction",
    "ppo/mean_advantage": "mean advantage",
    "ppo/mean_reward": "mean reward per step",
    "ppo/reward_std": "std of the reward",
    "ppo/learning_rate": "learning rate",
    "rlhf/kl_to_ref": "KL to the reference model",
    "rlhf/kl_coef": "KL coefficient β",
    "rlhf/score": "reward-model score",
    "rlhf/non_score_reward": "KL penalty (non-score reward)",
    "code/syntax_success_rate": "syntax success rate",
    "code/avg_test_pass_rate": "test pass rate",
    "code/quality_score": "quality score",
    "code/hidden_test_pass_rate": "hidden-test pass rate",
    "trpo/mean_kl": "KL of the accepted step",
}


def book_style() -> None:
    """Apply :data:`RC` to matplotlib: every figure drawn afterwards has the book's style."""
    plt.rcParams.update(RC)


def figure_size(rows: int = 1, panel_height: float = PANEL_HEIGHT_IN) -> tuple[float, float]:
    """(width, height) in inches of a figure of ``rows`` rows of panels, :data:`WIDTH_IN` wide."""
    check_range("rows", rows, 1)
    return WIDTH_IN, rows * panel_height + (0.5 if rows == 1 else 0.3)


def panels(n: int, per_row: int = 2, panel_height: float = PANEL_HEIGHT_IN, **subplots):
    """A figure of ``n`` panels, ``per_row`` (at most 3) to a row, :data:`WIDTH_IN` wide.

    Returns ``(fig, axes)`` with ``axes`` a list of exactly ``n`` Axes in reading order (the
    unused cells of the last row are removed). Extra keywords go to ``plt.subplots``
    (``sharex=True``, ...)."""
    check_range("n", n, 1)
    check_range("per_row", per_row, 1, MAX_PER_ROW)
    cols = min(n, per_row)
    rows = -(-n // cols)
    fig, grid = plt.subplots(rows, cols, figsize=figure_size(rows, panel_height), squeeze=False,
                             **subplots)
    axes = list(grid.flat)
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def human_number(x: float) -> str:
    """A tick label for a count: 0, 512, 20k, 1.5M (no "20000", no "2e4")."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.3g}"


def format_steps(ax, axis: str = "x") -> None:
    """Label the ``axis`` of ``ax`` with :func:`human_number` ticks (for environment steps)."""
    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(lambda x, _: human_number(x)))


def title(metric: str) -> str:
    """The metric's name in words, capitalised: "ppo/kl_divergence" -> "KL divergence (old → new)"."""
    words = TITLES.get(metric) or metric.rsplit("/", 1)[-1].replace("_", " ")
    return words[0].upper() + words[1:]


def legend_below(where, ncols: int | None = None, **legend):
    """One legend under the panels, off the data, for a Figure (every panel's labelled lines,
    each label once) or a single Axes. Any legend the panels had is removed. Needs the
    constrained layout (:data:`RC`), which makes room for it. Returns the Legend."""
    fig = where if isinstance(where, plt.Figure) else where.figure
    axes = fig.axes if isinstance(where, plt.Figure) else [where]
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for old in list(fig.legends):  # called twice (a dashboard, then its chapter): one legend
        old.remove()
    ncols = ncols or min(len(seen), 4) or 1
    return fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=ncols, **legend)


def figure_metadata(name: str, caption: str, alt: str) -> dict:
    """The cell metadata that makes a cell's figure numbered, captioned and described:
    ``cell.metadata.update(figure_metadata(...))``. ``name`` is the label for ``{numref}``;
    ``caption`` is MyST (math, references); ``alt`` says what the image shows, in plain words."""
    for argument, value in (("name", name), ("caption", caption), ("alt", alt)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{argument} must be a non-empty string, got {value!r}")
    return {"mystnb": {"figure": {"name": name, "caption": caption}, "image": {"alt": alt}}}


def reading_number(x, digits: int = 2) -> str:
    """A number as a table shows it: ``digits`` decimals for floats, thousands separated
    (12,288), never "-0.00" (a value that rounds to zero is "0.00"), integers without decimals,
    booleans as "yes"/"no", None and NaN as "–"."""
    import math
    import numbers

    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    import numpy as np

    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, numbers.Integral):
        return f"{int(x):,}"
    if isinstance(x, numbers.Real):
        text = f"{float(x):,.{digits}f}"
        return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text
    return str(x)


def table(data, digits: int | dict = 2, index: bool = False, code: tuple[str, ...] = ()):
    """A table for the page: a pandas ``Styler`` of ``data`` (a DataFrame, or anything
    ``pandas.DataFrame`` takes) that shows numbers with :func:`reading_number` (``digits``: one
    for all columns or ``{column: digits}``), text as text (no reprs: a string's first line,
    ``'def add1(x):\\n'`` reads "def add1(x):"; "<algorithm>/entropy" is shown, not read as an
    HTML tag), the columns named in ``code`` in a monospace
    font, and no index unless ``index``. The last expression of a cell, it renders as an HTML table
    that the book's CSS fits to the column (or scrolls on a phone)."""
    import pandas as pd

    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)

    def cell(column):
        places = digits.get(column, 2) if isinstance(digits, dict) else digits

        def show(x):
            if isinstance(x, str):
                lines = x.strip("\n").splitlines() or [""]
                return lines[0] + (" …" if len(lines) > 1 else "")
            return reading_number(x, places)
        return show

    styler = frame.style.format({c: cell(c) for c in frame.columns}, escape="html")  # "<a>" is text
    if code:
        styler = styler.set_properties(subset=list(code), **{"font-family": "var(--pst-font-family-monospace)"})
    if not index:
        styler = styler.hide(axis="index")
    return styler
