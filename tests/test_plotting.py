"""Plots: the right panels, titles, axis labels and lines, drawn with the Agg backend."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from minippo.history import History  # noqa: E402
from minippo.plotting import dashboard, heatmap, plot_seeds  # noqa: E402


def fake_history(seed=0, n=12):
    h = History()
    for i in range(n):
        step = (i + 1) * 256
        h.log_episodes(step, 0.1 * i, [20.0 + 10 * i + seed, 25.0 + 10 * i],
                       [20 + 10 * i, 25 + 10 * i])
        h.log_update({
            "global_step": step, "time/elapsed": 0.1 * i,
            "rollout/episodic_return": h.recent_return(),
            "ppo/policy_loss": -0.01 * i, "ppo/value_loss": 10.0 / (i + 1),
            "ppo/kl_divergence": 0.001 * (i % 4), "ppo/clip_fraction": 0.05 + 0.01 * seed,
            "ppo/entropy": 0.69 - 0.01 * i, "ppo/explained_variance": 0.1 * i - 0.3,
        })
    return h


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_dashboard_panels_titles_and_labels():
    fig = dashboard(fake_history(), target_kl=0.015, title="PPO on CartPole")
    axes = fig.axes
    titles = [ax.get_title() for ax in axes]
    assert titles == ["Episodic return", "Return std (last 20)", "Policy loss", "Value loss",
                      "KL divergence per update", "Clip fraction (ε = 0.2)", "Policy entropy",
                      "Explained variance"]
    assert all(ax.get_xlabel() == "environment steps" for ax in axes)
    assert all(ax.get_ylabel() for ax in axes)
    assert list(axes[6].lines[0].get_ydata()) == pytest.approx([0.69 - 0.01 * i for i in range(12)])
    assert list(axes[7].lines[0].get_ydata()) == pytest.approx([0.1 * i - 0.3 for i in range(12)])
    kl = axes[4]
    assert len(kl.lines) == 2  # the KL curve and the dashed target line
    assert kl.lines[1].get_ydata()[0] == pytest.approx(0.015)
    assert list(kl.lines[0].get_ydata()) == pytest.approx([0.001 * (i % 4) for i in range(12)])
    assert fig._suptitle.get_text() == "PPO on CartPole"
    assert len(axes[0].collections) == 1 and len(axes[0].lines) == 1  # episodes + rolling mean


def test_dashboard_return_line_has_one_point_per_update():
    h = History()  # an RLHF-like run: four responses finish at each update's step
    for i in range(3):
        h.log_episodes(100 * (i + 1), 0.0, [float(4 * i + j) for j in range(4)], [5] * 4)
        h.log_update({"global_step": 100 * (i + 1), "time/elapsed": 0.0})
    fig = dashboard(h, window=6)
    line, std = fig.axes[0].lines[0], fig.axes[1].lines[0]
    assert list(line.get_xdata()) == [100, 200, 300]
    # after each update: the mean of the last 6 returns of 0, 1, ..., 11
    assert list(line.get_ydata()) == pytest.approx([1.5, 4.5, 8.5])
    assert list(std.get_ydata()) == pytest.approx([np.std([0, 1, 2, 3]), np.std(range(2, 8)), np.std(range(6, 12))])


def test_dashboard_reads_target_from_config_and_handles_missing_metrics():
    class Cfg:
        target_kl = None
        max_kl = 0.01

    h = History(config=Cfg())
    h.log_update({"global_step": 100, "time/elapsed": 0.0, "ppo/kl_divergence": 0.002})
    fig = dashboard(h)
    kl = fig.axes[4]
    assert kl.lines[1].get_ydata()[0] == pytest.approx(0.01)
    assert math.isnan(fig.axes[2].lines[0].get_ydata()[0])  # no policy loss logged: NaN, no crash


def test_dashboard_reads_each_algorithms_own_metrics():
    h = History()
    h.log_update({"global_step": 100, "time/elapsed": 0.0, "trpo/policy_loss": -0.1,
                  "trpo/kl_divergence": 0.004, "trpo/entropy": 0.6})
    assert h.algorithm == "trpo" and h.metric("kl_divergence") == [0.004]
    fig = dashboard(h)
    assert list(fig.axes[4].lines[0].get_ydata()) == [0.004]
    assert list(fig.axes[6].lines[0].get_ydata()) == [0.6]


def test_plot_seeds_compares_algorithms_by_their_own_metric():
    runs = {}
    for algorithm, kl in (("reinforce", 0.05), ("ppo", 0.01)):
        h = History()
        for i in range(3):
            h.log_update({"global_step": 100 * (i + 1), f"{algorithm}/policy_loss": 0.0,
                          f"{algorithm}/kl_divergence": kl})
        runs[algorithm] = [h]
    ax = plot_seeds(runs, metric="kl_divergence")
    assert sorted(round(float(line.get_ydata()[0]), 3) for line in ax.lines[:2]) == [0.01, 0.05]


def test_plot_seeds_one_line_and_band_per_run():
    runs = {"clipped": [fake_history(s) for s in range(3)],
            "unclipped": [fake_history(s + 5) for s in range(3)]}
    ax = plot_seeds(runs, metric="ppo/clip_fraction")
    assert ax.get_xlabel() == "environment steps"
    assert ax.get_ylabel() == "Clip fraction"  # words, not the metric's key
    assert ax.get_title() == "Clip fraction: mean ± band over 3 seeds"
    assert len(ax.lines) >= 2
    mean_line = ax.lines[0].get_ydata()
    assert mean_line[0] == pytest.approx(0.06)  # mean of 0.05, 0.06, 0.07
    assert len(ax.collections) >= 2  # one band per run
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["clipped", "unclipped"]


def test_plot_seeds_aligns_seeds_on_wall_time():
    runs = {"ppo": []}
    for s in range(3):  # each seed logs its own times: no x value is shared
        h = fake_history(s)
        h.updates["time/elapsed"] = [t * (1 + 0.1 * s) + 0.01 * s for t in h.updates["time/elapsed"]]
        runs["ppo"].append(h)
    ax = plot_seeds(runs, metric="ppo/clip_fraction", x="time/elapsed", grid_points=20)
    assert ax.get_xlabel() == "seconds of training"
    x, y = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()
    assert len(x) == 20 and x[0] == pytest.approx(0.02) and x[-1] == pytest.approx(1.1)  # the common range
    assert y == pytest.approx([0.06] * 20)  # the mean of 0.05, 0.06, 0.07 at every point
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.05) and band.max() == pytest.approx(0.07)  # ± one sd across seeds
    with pytest.raises(ValueError, match="grid_points"):
        plot_seeds(runs, x="time/elapsed", grid_points=1)
    far = fake_history(9)
    far.updates["time/elapsed"] = [t + 100 for t in far.updates["time/elapsed"]]
    with pytest.raises(ValueError, match="share no range"):
        plot_seeds({"ppo": [runs["ppo"][0], far]}, x="time/elapsed")


def test_heatmap_pivots_and_averages():
    frame = pd.DataFrame({"lr": [1e-3, 1e-3, 3e-3, 3e-3, 1e-3], "epochs": [4, 8, 4, 8, 4],
                          "seconds": [1.0, 2.0, 3.0, 4.0, 3.0]})
    ax = heatmap(frame, x="lr", y="epochs", value="seconds")
    assert ax.get_xlabel() == "lr" and ax.get_ylabel() == "epochs"
    assert ax.get_title() == "seconds (mean over runs)"
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["2", "2", "3", "4"])  # (1e-3, 4) averages 1.0 and 3.0


def test_dashboard_legend_is_under_the_panels_not_on_the_data():
    fig = dashboard(fake_history())
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert "episode" in labels and any(label.startswith("KL") for label in labels)
    fig.canvas.draw()
    lowest = min(ax.get_window_extent().y0 for ax in fig.axes)
    assert legend.get_window_extent().y1 <= lowest
