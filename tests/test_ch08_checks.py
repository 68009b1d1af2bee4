"""Chapter 8's exercise checkers: the intended solutions pass, the usual mistakes are caught."""
import pytest
import torch

from minippo import checks


def code_reward(syntax, tests, quality, violation, finished, weights, missing_eos_penalty):
    w_syntax, w_tests, w_quality = weights
    total = w_syntax * syntax + w_tests * tests + w_quality * quality
    total = torch.where(violation, torch.zeros_like(total), total)
    return total - missing_eos_penalty * (~finished).to(total.dtype)


def clipped_tokens(logp, logp_old, adv, clip_eps):
    ratio = torch.exp(logp - logp_old)
    return ((ratio > 1 + clip_eps) & (adv > 0)) | ((ratio < 1 - clip_eps) & (adv < 0))


def test_solutions_pass(capsys):
    assert checks.check_code_reward(code_reward)
    assert checks.check_clipped_tokens(clipped_tokens)
    out = capsys.readouterr().out
    assert "✓ code_reward" in out and "✓ clipped_tokens" in out


def penalty_skipped_on_violation(syntax, tests, quality, violation, finished, weights, missing_eos_penalty):
    total = code_reward(syntax, tests, quality, violation, finished, weights, missing_eos_penalty)
    return torch.where(violation, torch.zeros_like(total), total)


def violation_subtracts(syntax, tests, quality, violation, finished, weights, missing_eos_penalty):
    w_syntax, w_tests, w_quality = weights
    total = w_syntax * syntax + w_tests * tests + w_quality * quality - violation.float()
    return total - missing_eos_penalty * (~finished).to(total.dtype)


def outside_the_range(logp, logp_old, adv, clip_eps):  # what clip_fraction counts, not what is silenced
    return (torch.exp(logp - logp_old) - 1).abs() > clip_eps


@pytest.mark.parametrize("checker, wrong", [
    (checks.check_code_reward, penalty_skipped_on_violation),
    (checks.check_code_reward, violation_subtracts),
    (checks.check_clipped_tokens, outside_the_range),
])
def test_typical_mistakes_fail_with_the_case(checker, wrong):
    with pytest.raises(AssertionError, match=r"case \d+ of 20"):
        checker(wrong)
