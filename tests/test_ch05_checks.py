"""Chapter 5's exercise checker ``check_solved_at``: right answers pass, typical mistakes fail."""
import pytest
import torch

torch.set_num_threads(1)

from minippo import checks  # noqa: E402


def running_sum(returns, window, threshold):
    total = 0.0
    for i, g in enumerate(returns.tolist()):
        total += g
        if i >= window:
            total -= returns[i - window].item()
        if i + 1 >= window and total >= threshold * window:
            return i
    return -1


def vectorised(returns, window, threshold):
    means = returns.unfold(0, window, 1).mean(-1) if len(returns) >= window else returns[:0]
    hits = (means >= threshold).nonzero()
    return int(hits[0]) + window - 1 if len(hits) else -1


def partial_window(returns, window, threshold):  # BUG: judges before `window` episodes
    for i in range(len(returns)):
        if returns[max(0, i - window + 1):i + 1].mean() >= threshold:
            return i
    return -1


def strict(returns, window, threshold):  # BUG: > instead of >=
    for i in range(window - 1, len(returns)):
        if returns[i - window + 1:i + 1].sum() > threshold * window:
            return i
    return -1


def none_when_unsolved(returns, window, threshold):  # BUG: None instead of -1
    i = running_sum(returns, window, threshold)
    return None if i < 0 else i


@pytest.mark.parametrize("fn", [running_sum, vectorised])
def test_correct_solutions_pass(fn, capsys):
    assert checks.check_solved_at(fn)
    assert "✓ solved_at" in capsys.readouterr().out


@pytest.mark.parametrize("fn, case", [(partial_window, "window-th episode"),
                                      (strict, "exactly at the threshold"),
                                      (none_when_unsolved, "never solved")])
def test_mistakes_fail_on_the_case_that_shows_them(fn, case):
    with pytest.raises(AssertionError, match=case):
        checks.check_solved_at(fn)
