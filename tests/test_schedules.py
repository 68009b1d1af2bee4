"""Schedules against torch's own learning-rate schedulers, step by step."""
import math
import warnings

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from minippo.schedules import (  # noqa: E402
    AdaptiveKLController,
    AdaptiveKLPenalty,
    constant,
    linear_anneal,
    warmup_cosine,
)


def torch_lrs(lr, make_scheduler, steps):
    """Learning rate in force at each of ``steps`` updates under a torch scheduler."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make_scheduler(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def source_scheduler(warmup, total, floor, start_factor):
    """The source material's scheduler: SequentialLR(LinearLR warm-up, CosineAnnealingLR)."""
    def make(opt):
        sch = torch.optim.lr_scheduler
        return sch.SequentialLR(opt, schedulers=[
            sch.LinearLR(opt, start_factor=start_factor, total_iters=warmup),
            sch.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=floor)],
            milestones=[warmup])
    return make


@pytest.mark.parametrize("total,warmup,peak,floor,start_factor", [
    (100, 10, 3e-4, 0.0, 0.1), (50, 7, 1.0, 0.1, 0.1), (20, 0, 0.5, 0.0, 0.1),
    (30, 29, 2e-3, 1e-4, 0.25), (12, 1, 1.0, 0.0, 1 / 3)])
def test_warmup_cosine_equals_sequential_lr(total, warmup, peak, floor, start_factor):
    expected = torch_lrs(peak, source_scheduler(warmup, total, floor, start_factor), total + 1)
    ours = [warmup_cosine(k, total, peak, warmup, floor, start_factor=start_factor)
            for k in range(total + 1)]
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)
    # after ``total`` it stays at the floor (torch's cosine is periodic and would rise again)
    assert warmup_cosine(total + 5, total, peak, warmup, floor) == pytest.approx(floor)


@pytest.mark.parametrize("start,end", [(2.5e-4, 0.0), (1.0, 0.1)])
def test_linear_anneal_equals_linear_lr_and_cleanrl(start, end):
    total = 40
    expected = torch_lrs(start, lambda opt: torch.optim.lr_scheduler.LinearLR(
        opt, start_factor=1.0, end_factor=end / start, total_iters=total), total + 3)
    ours = [linear_anneal(k, total, start, end) for k in range(total + 3)]
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)
    if end == 0.0:  # CleanRL: frac = 1 - (iteration - 1) / num_iterations, iteration from 1
        for iteration in range(1, total + 1):
            frac = 1.0 - (iteration - 1.0) / total
            assert linear_anneal(iteration - 1, total, start) == pytest.approx(frac * start)


def test_constant():
    expected = torch_lrs(0.01, lambda opt: torch.optim.lr_scheduler.ConstantLR(
        opt, factor=1.0, total_iters=5), 8)
    assert [constant(k, 8, 0.01) for k in range(8)] == pytest.approx(expected)


def test_schedule_arguments_are_validated():
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(0, 10, 1.0, 10)
    with pytest.raises(ValueError, match="total"):
        linear_anneal(0, 0, 1.0)
    with pytest.raises(ValueError, match="step"):
        linear_anneal(-1, 10, 1.0)
    with pytest.raises(ValueError, match="start"):
        linear_anneal(0, 10, -1.0)
    with pytest.raises(ValueError, match="floor"):
        warmup_cosine(0, 10, 1.0, 2, floor=2.0)
    with pytest.raises(ValueError, match="target_kl"):
        AdaptiveKLPenalty(1.0, 0.0)
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(0.2, 6.0, 0)


def test_adaptive_kl_penalty_follows_ppo_section_4():
    pen = AdaptiveKLPenalty(beta=1.0, target_kl=0.01)
    assert pen.update(0.02) == 2.0       # d > 1.5 d_targ: double
    assert pen.update(0.015) == 2.0      # inside [d_targ / 1.5, 1.5 d_targ]: keep
    assert pen.update(0.0067) == 2.0
    assert pen.update(0.006) == 1.0      # d < d_targ / 1.5: halve
    assert pen.update(0.0) == 0.5
    assert pen.value == pen.beta == 0.5
    assert pen.update(-1e-9) == 0.25  # float32 rounding or a k1 estimate: below target
    with pytest.raises(ValueError, match="kl"):
        pen.update(float("nan"))


def test_adaptive_kl_controller_matches_proportional_rule():
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10_000)
    value = 0.2
    for kl, n in [(6.0, 256), (9.0, 256), (100.0, 64), (3.0, 512), (0.0, 1000), (5.5, 256)]:
        error = float(np.clip(kl / 6.0 - 1.0, -0.2, 0.2))
        value *= 1 + error * n / 10_000
        assert ctl.update(kl, n) == pytest.approx(value, rel=1e-12)
    assert ctl.value == pytest.approx(value)
    # a KL far above target moves the coefficient by at most 20% of n / horizon
    ctl = AdaptiveKLController(0.1, 6.0, 100)
    assert ctl.update(1e9, 100) == pytest.approx(0.12)
    fixed = AdaptiveKLController(0.05, target=None)
    assert fixed.update(50.0, 1000) == 0.05
    assert math.isfinite(fixed.value)
