"""The Chapter 6 checker accepts the package's KL-penalised rewards and catches the usual bug."""
import pytest
import torch

import minippo as mp
import minippo.lm  # noqa: F401  (mp.lm)


def student_kl_penalized_rewards(score, logp, logp_ref, mask, kl_coef):
    kl = (logp - logp_ref) * mask
    rewards = -kl_coef * kl
    last = mask.sum(dim=1) - 1  # (B,) the EOS, or the last token of a truncated row
    rewards[torch.arange(len(score)), last] += score
    return rewards, kl


def test_check_kl_penalized_rewards_accepts_a_student_solution():
    assert mp.checks.check_kl_penalized_rewards(student_kl_penalized_rewards)


def test_check_kl_penalized_rewards_catches_the_wrong_sign():
    def bonus(score, logp, logp_ref, mask, kl_coef):
        rewards, kl = student_kl_penalized_rewards(score, logp, logp_ref, mask, -kl_coef)
        return rewards, kl  # the KL rewarded, not penalised

    with pytest.raises(AssertionError, match="rewards"):
        mp.checks.check_kl_penalized_rewards(bonus)


def test_check_kl_penalized_rewards_catches_the_score_at_the_last_column():
    def score_at_last_column(score, logp, logp_ref, mask, kl_coef):
        kl = (logp - logp_ref) * mask
        rewards = -kl_coef * kl
        rewards[:, -1] += score  # wrong: the score belongs on the EOS, not on column R - 1
        return rewards * mask, kl

    with pytest.raises(AssertionError, match="rewards"):
        mp.checks.check_kl_penalized_rewards(score_at_last_column)


def test_check_kl_penalized_rewards_catches_a_missing_mask():
    def unmasked(score, logp, logp_ref, mask, kl_coef):
        rewards, _ = mp.lm.rlhf.kl_penalized_rewards(score, logp, logp_ref, mask, kl_coef)
        return rewards, logp - logp_ref  # kl not zeroed outside the mask

    with pytest.raises(AssertionError, match="kl"):
        mp.checks.check_kl_penalized_rewards(unmasked)
