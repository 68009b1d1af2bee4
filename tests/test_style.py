"""The book's figure style (minippo.style): sizes for the column, readable text, tick formats,
titles in words, legends under the panels, figure metadata; the source listing helper."""
import matplotlib

matplotlib.use("Agg")

import io  # noqa: E402
import re  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

import minippo as mp  # noqa: E402
from minippo import style  # noqa: E402
from test_plotting import fake_history  # noqa: E402


@pytest.fixture(autouse=True)
def book_rc():
    with plt.rc_context():
        style.book_style()
        yield
    plt.close("all")


def drawn_width_px(fig) -> int:
    """The PNG width as Jupyter's inline backend saves it (``bbox_inches="tight"``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return Image.open(buffer).size[0]


@pytest.mark.parametrize("n,per_row", [(1, 2), (2, 2), (3, 3), (5, 2), (6, 3)])
def test_panels_fit_the_column_and_keep_text_readable(n, per_row):
    fig, axes = style.panels(n, per_row=per_row)
    assert len(axes) == n and len(fig.axes) == n  # the unused cells of the last row are gone
    for ax in axes:
        ax.plot([0, 20_000], [0, 1], label="a run")
        ax.set(title="A title", xlabel="environment steps")
    style.legend_below(fig)
    width = drawn_width_px(fig)
    assert 0.8 * style.WIDTH_PX <= width <= style.WIDTH_PX + 2, width
    # 60% of it still fits a phone's 358-px column: never shown below the browser test's floor
    assert 0.6 * width <= 358
    smallest_pt = min(t.get_fontsize() for ax in axes for t in
                      [ax.title, ax.xaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()])
    assert smallest_pt * style.DPI / 72 >= 12  # px on a desktop, where it is shown at drawn size


def test_panels_checks_its_arguments():
    with pytest.raises(ValueError, match="per_row"):
        style.panels(4, per_row=4)
    with pytest.raises(ValueError, match="n must"):
        style.panels(0)


@pytest.mark.parametrize("x,text", [(0, "0"), (512, "512"), (20_000, "20k"), (1_500_000, "1.5M"),
                                    (-3000, "-3k"), (0.25, "0.25"), (2.5e9, "2.5G")])
def test_human_number(x, text):
    assert style.human_number(x) == text


def test_step_ticks_read_20k():
    fig, (ax,) = style.panels(1)
    ax.plot([0, 40_000], [0, 1])
    style.format_steps(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "20k" in labels and not any(label.endswith("000") for label in labels), labels


def test_titles_are_words():
    assert style.title("ppo/kl_divergence") == "KL divergence (old → new)"
    assert style.title("rollout/episodic_return") == "Episodic return"
    assert style.title("grpo/zero_std_groups") == "Zero std groups"  # unknown: its name in words
    fig = mp.plotting.dashboard(fake_history())
    keys = re.compile(r"[a-z]+/[a-z_]+")  # a metric key such as ppo/kl_divergence
    assert not any(keys.search(ax.get_title()) or keys.search(ax.get_ylabel()) for ax in fig.axes)


def test_legend_below_collects_each_label_once_and_leaves_the_panels():
    fig, axes = style.panels(2)
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="PPO")
        ax.plot([0, 1], [1, 0], label="TRPO")
        ax.legend()
    legend = style.legend_below(fig)
    assert [t.get_text() for t in legend.get_texts()] == ["PPO", "TRPO"]
    assert all(ax.get_legend() is None for ax in axes)
    fig.canvas.draw()
    box, panel = legend.get_window_extent(), axes[0].get_window_extent()
    assert box.y1 <= panel.y0  # under the panels, not on the data


def test_dashboard_is_column_wide_two_panels_to_a_row():
    fig = mp.plotting.dashboard(fake_history())
    assert len(fig.axes) == 8
    assert drawn_width_px(fig) <= style.WIDTH_PX + 2
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    assert len(rows) == 4


def test_figure_metadata_is_what_myst_nb_reads():
    meta = style.figure_metadata("ch05-fig", "What each detail buys.", "Three panels of return.")
    assert meta == {"mystnb": {"figure": {"name": "ch05-fig", "caption": "What each detail buys."},
                               "image": {"alt": "Three panels of return."}}}
    with pytest.raises(ValueError, match="alt"):
        style.figure_metadata("ch05-fig", "A caption.", " ")


def test_source_listing_is_a_highlighted_python_block():
    shown = mp.prose.source(mp.advantages.gae)
    text = shown.data
    assert text.startswith("```python\ndef gae(") and text.endswith("\n```")
    body = mp.prose.source(mp.advantages.gae, docstring=False).data
    assert '"""' not in body and "def gae(" in body and len(body) < len(text)
    assert mp.prose.source(mp.advantages.gae, lines=slice(0, 1)).data.count("\n") == 2


def test_reading_number_never_shows_minus_zero_or_reprs():
    import numpy as np

    assert mp.style.reading_number(-0.001) == "0.00"
    assert mp.style.reading_number(-0.004, 3) == "-0.004"
    assert mp.style.reading_number(12288) == "12,288"
    assert mp.style.reading_number(np.int64(5)) == "5"
    assert mp.style.reading_number(float("nan")) == "–"
    assert mp.style.reading_number(np.bool_(True)) == "yes"
    assert mp.style.reading_number(1234.5678, 1) == "1,234.6"


def test_table_formats_numbers_and_text_for_reading():
    html = mp.style.table({"code": ["def add1(x):\n    return x + 1\n"], "KL": [-0.0001], "n": [2048]},
                          digits={"KL": 2}, code=("code",)).to_html()
    assert "def add1(x): …" in html and "\\n" not in html and "'def" not in html
    assert ">0.00<" in html and "-0.00" not in html and "2,048" in html
    assert "monospace" in html
    escaped = mp.style.table({"minippo": ["<algorithm>/entropy"], "x": ["a & b"]}).to_html()
    assert "&lt;algorithm&gt;/entropy" in escaped and "a &amp; b" in escaped


def test_legend_below_twice_leaves_one_legend():
    """A chapter may put a legend under a dashboard that already has one: still one legend."""
    fig, axes = style.panels(2)
    axes[0].plot([0, 1], [0, 1], label="PPO")
    style.legend_below(fig)
    style.legend_below(fig)
    assert len(fig.legends) == 1
