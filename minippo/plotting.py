"""Plots every chapter draws: the training dashboard, several seeds as a band, sweep heatmaps.

They read a :class:`minippo.history.History` (or a pandas DataFrame for sweeps), never train
anything, and return the matplotlib Figure/Axes so a notebook can add to them.  Metric names are
the metric dictionary's (``book/metrics.md``: ``ppo/kl_divergence``, ...), so the REINFORCE, TRPO, PPO and RLHF dashboards are the
same picture (Chapter 5, PPO in practice: "the three numbers a PPO user watches").  They are
drawn in the book's figure style (:mod:`minippo.style`: column-wide, panels two to a row, step
counts as "20k", titles in words), re-exported here: ``mp.plotting.book_style()``.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from minippo.history import EPISODE_WINDOW, History
from minippo.objectives import DIAGNOSTIC_CLIP_EPS
from minippo.style import TITLES, book_style, format_steps, legend_below, panels, title
from minippo.utils import check_range

__all__ = ["dashboard", "plot_seeds", "heatmap", "book_style", "panels", "legend_below", "title"]

STEP_LABEL = "environment steps"


def _column(history: History, name: str) -> np.ndarray:
    return np.asarray(history.updates.get(name, [math.nan] * len(history)), dtype=float)


def _rolling(x: np.ndarray, window: int, fn) -> np.ndarray:
    """``fn`` over the last ``window`` entries at every position (fewer at the start)."""
    return np.array([fn(x[max(0, i - window + 1):i + 1]) for i in range(len(x))])


def dashboard(history: History, target_kl: float | None = None, title: str | None = None,
              clip_eps: float = DIAGNOSTIC_CLIP_EPS, window: int = EPISODE_WINDOW):
    """The 2x4 training dashboard of every trainer in the book.

    Top row, the agent: episodic return, its spread, policy loss, value loss.  Bottom row, the
    size and health of each update: KL, clip fraction, entropy, explained variance.

    * return: every finished episode (dots) and the mean of the last ``window`` (line), one
      point per update: episodes that finish in the same update share its step (all the
      responses of an RLHF batch do), and the line shows the value after the update's last;
      next to it the standard deviation of the last ``window`` returns;
    * policy and value loss per update;
    * ``<prefix>/kl_divergence`` (k3 estimate of KL(old || new) after each update) with a dashed
      line at ``target_kl`` (default: the run's ``config.target_kl``, or TRPO's ``config.max_kl``);
    * ``<prefix>/clip_fraction`` at ``clip_eps``;
    * ``<prefix>/entropy`` of the policy (nats per step or token): a collapse detector;
    * ``<prefix>/explained_variance`` of the returns by the critic: 1 perfect, 0 no better than
      the mean, below 0 worse.

    ``<prefix>`` is the run's :attr:`History.algorithm` (``ppo`` if it logged no update yet):
    the same picture for REINFORCE, A2C, TRPO, PPO, RLHF and GRPO.  Every x axis is environment steps.  Returns the matplotlib Figure.
    """
    if target_kl is None and history.config is not None:
        config = history.config
        target_kl = getattr(config, "target_kl", None) or getattr(config, "max_kl", None)
    prefix = history.algorithm or "ppo"
    fig, axes = panels(8, per_row=2)
    ax_ret, ax_std, ax_pl, ax_vl, ax_kl, ax_cf, ax_ent, ax_ev = axes
    x = _column(history, "global_step")
    ep_x = np.asarray(history.episodes["global_step"], dtype=float)
    ep_r = np.asarray(history.episodes["return"], dtype=float)
    last = np.r_[ep_x[1:] != ep_x[:-1], True] if len(ep_x) else np.zeros(0, dtype=bool)  # last episode of each step

    ax_ret.scatter(ep_x, ep_r, s=4, alpha=0.25, color="tab:blue", label="episode")
    if len(ep_r):
        ax_ret.plot(ep_x[last], _rolling(ep_r, window, np.mean)[last], color="tab:blue",
                    label=f"mean of last {window}")
    ax_ret.set(title="Episodic return", ylabel="return (reward per episode)")

    if len(ep_r):
        ax_std.plot(ep_x[last], _rolling(ep_r, window, np.std)[last], color="tab:gray")
    # Titles stay within their panel (about 200 px): the constrained layout makes room for a
    # title's height, not its width, so a longer one runs off the 590-px figure (issue 17).
    ax_std.set(title=f"Return std (last {window})", ylabel=f"std of the last {window} returns")

    ax_pl.plot(x, _column(history, f"{prefix}/policy_loss"), color="tab:purple")
    ax_pl.set(title="Policy loss", ylabel="loss (surrogate, negated)")

    ax_vl.plot(x, _column(history, f"{prefix}/value_loss"), color="tab:green")
    ax_vl.set(title="Value loss", ylabel="loss (½ squared error)")

    ax_kl.plot(x, _column(history, f"{prefix}/kl_divergence"), color="tab:red",
               label="KL(old ‖ new), k3")
    if target_kl is not None:
        ax_kl.axhline(target_kl, color="black", linestyle="--", label=f"target {target_kl:g}")
    ax_kl.set(title="KL divergence per update", ylabel="KL (nats)")

    ax_cf.plot(x, _column(history, f"{prefix}/clip_fraction"), color="tab:orange")
    ax_cf.set(title=f"Clip fraction (ε = {clip_eps:g})", ylabel="fraction of samples clipped",
              ylim=(0, None))

    ax_ent.plot(x, _column(history, f"{prefix}/entropy"), color="tab:brown")
    ax_ent.set(title="Policy entropy", ylabel="entropy (nats)")

    ax_ev.plot(x, _column(history, f"{prefix}/explained_variance"), color="tab:cyan")
    ax_ev.axhline(0.0, color="0.6", linewidth=0.8)
    ax_ev.set(title="Explained variance", ylabel="1 − Var[R−V]/Var[R]")

    for ax in axes:
        ax.set_xlabel(STEP_LABEL)
        format_steps(ax)
        ax.grid(alpha=0.3)
    legend_below(fig)  # episode dots, their mean, the KL and its target: one legend, off the data
    if title:
        fig.suptitle(title)
    return fig


def plot_seeds(runs: dict[str, list[History]], metric: str = "rollout/episodic_return",
               x: str = "global_step", ax=None, errorbar="sd", grid_points: int = 100):
    """Mean over seeds with a band (seaborn ``lineplot``; ``errorbar="sd"``: ± one standard
    deviation), one line per label of ``runs`` (label -> list of histories, one per seed).
    A ``metric`` without a group (``"kl_divergence"``) is each run's own algorithm's
    (:meth:`History.metric`), so REINFORCE, TRPO and PPO share one panel.

    Runs of one config log the same ``global_step`` values, so seeds are aligned on them. Where
    the seeds of a run do not share their ``x`` values (``x="time/elapsed"``), each seed is
    interpolated linearly onto ``grid_points`` common points spanning the range all seeds cover,
    so the band is taken across seeds at equal ``x``. Returns the Axes.
    """
    import pandas as pd
    import seaborn as sns

    check_range("grid_points", grid_points, 2)
    rows = []
    for label, histories in runs.items():
        frames = [pd.DataFrame({x: h.updates[x], "value": h[metric] if "/" in metric
                                else h.metric(metric)}).dropna().sort_values(x)
                  for h in histories]
        if any(not np.array_equal(f[x].to_numpy(), frames[0][x].to_numpy()) for f in frames):
            lo, hi = max(f[x].min() for f in frames), min(f[x].max() for f in frames)
            if not lo < hi:
                raise ValueError(f"the seeds of run {label!r} share no range of {x!r} to align them on")
            grid = np.linspace(lo, hi, grid_points)
            frames = [pd.DataFrame({x: grid, "value": np.interp(grid, f[x], f["value"])}) for f in frames]
        for seed, frame in enumerate(frames):
            frame["run"], frame["seed"] = label, seed
            rows.append(frame)
    data = pd.concat(rows, ignore_index=True)
    if ax is None:
        _, (ax,) = panels(1)
    sns.lineplot(data=data, x=x, y="value", hue="run", errorbar=errorbar, ax=ax)
    n = max(len(h) for h in runs.values())
    ax.set(title=f"{title(metric)}: mean ± band over {n} seeds",
           xlabel=TITLES.get(x, x), ylabel=title(metric))
    if x == "global_step":
        format_steps(ax)
    ax.grid(alpha=0.3)
    return ax


def heatmap(frame, x: str, y: str, value: str, ax=None, fmt: str = ".3g", cmap: str = "viridis"):
    """A hyperparameter sweep as a heatmap: ``value`` averaged over rows with the same ``(x, y)``
    (e.g. over seeds), annotated.  ``frame`` is a pandas DataFrame.  Returns the Axes."""
    import seaborn as sns

    table = frame.pivot_table(index=y, columns=x, values=value, aggfunc="mean")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 * table.shape[1] + 3, 0.8 * table.shape[0] + 2),
                             constrained_layout=True)
    sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, ax=ax, cbar_kws={"label": value})
    ax.set(title=f"{value} (mean over runs)", xlabel=x, ylabel=y)
    return ax
