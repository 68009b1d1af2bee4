"""Chapter 7's exercise checker: the Bradley-Terry loss (value, gradient, numerical stability)."""
import pytest
import torch
import torch.nn.functional as F

from minippo import checks

torch.set_num_threads(1)


def test_check_bradley_terry_loss_accepts_stable_answers():
    assert checks.check_bradley_terry_loss(lambda w, l: -F.logsigmoid(w - l).mean())
    assert checks.check_bradley_terry_loss(lambda w, l: F.softplus(l - w).mean())


@pytest.mark.parametrize("wrong, message", [
    (lambda w, l: -torch.log(torch.sigmoid(w - l)).mean(), "got inf"),  # underflows for large gaps
    (lambda w, l: -F.logsigmoid(w - l).sum(), "expected 0.693147"),  # sum instead of mean
    (lambda w, l: -F.logsigmoid(l - w).mean(), "gradient"),  # chosen and rejected swapped
    (lambda w, l: torch.tensor(-F.logsigmoid(w - l).mean().item()), "autograd"),  # detached
])
def test_check_bradley_terry_loss_rejects_common_mistakes(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_bradley_terry_loss(wrong)
