"""Schedules: learning-rate schedules and the two adaptive KL coefficients.

The learning-rate schedules are plain functions of the step, ``f(step, total, ...) -> float``,
so that a training loop can set ``param_group["lr"]`` itself and a plot can draw the schedule
without an optimizer. ``step`` counts optimizer updates already done (0 for the first update):
``f(k, ...)`` equals the learning rate a ``torch.optim.lr_scheduler`` gives after ``k`` calls
of ``scheduler.step()``; the tests compare them step by step.

The KL coefficients are small stateful objects with an ``update`` method, because their value
depends on the history of measured KLs:

* :class:`AdaptiveKLPenalty` — PPO paper Section 4: halve or double beta when the KL after an
  update misses the target by a factor of 1.5 (Chapter 4).
* :class:`AdaptiveKLController` — Ziegler et al. (2019), "Fine-Tuning Language Models from Human
  Preferences", Section 2.2, and TRL's ``AdaptiveKLController``: proportional control of the
  RLHF KL penalty towards a target KL (Chapter 8).
"""
from __future__ import annotations

import math

from minippo.utils import check_range

__all__ = ["constant", "linear_anneal", "warmup_cosine", "AdaptiveKLPenalty",
           "AdaptiveKLController"]


def _check_step(step: int, total: int) -> None:
    if not isinstance(total, int) or total < 1:
        raise ValueError(f"total must be an int >= 1, got {total!r}")
    check_range("step", step, 0)


def constant(step: int, total: int, start: float) -> float:
    """The constant schedule: ``start`` at every step (same signature as the others)."""
    _check_step(step, total)
    check_range("start", start, 0.0)
    return float(start)


def linear_anneal(step: int, total: int, start: float, end: float = 0.0) -> float:
    r"""Linear interpolation from ``start`` at step 0 to ``end`` at step ``total``, then ``end``.

    .. math:: \eta_k = \eta_{start} + (\eta_{end} - \eta_{start})\,\min(k, K)/K

    With ``end=0`` this is the learning-rate annealing of the PPO paper's Atari setting
    (Schulman et al. 2017, Table 5: "linearly annealed from 1 to 0"; its MuJoCo Table 3 keeps the
    step size constant, OpenAI Baselines' ``ppo2`` anneals it there too) and CleanRL's
    ``anneal_lr`` (``frac = 1 - (iteration - 1) / num_iterations``); it equals
    ``torch.optim.lr_scheduler.LinearLR(start_factor=1, end_factor=end/start, total_iters=total)``.
    Chapter 5, PPO in practice.
    """
    _check_step(step, total)
    check_range("start", start, 0.0)
    check_range("end", end, 0.0)
    frac = min(step, total) / total
    return float(start + (end - start) * frac)


def warmup_cosine(step: int, total: int, peak: float, warmup: int, floor: float = 0.0, *,
                  start_factor: float = 0.1) -> float:
    r"""Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``floor``.

    .. math::
        \eta_k = \eta_{peak}\big(s + (1-s)\,k/W\big) \quad (k < W), \qquad
        \eta_k = \eta_{floor} + \tfrac12(\eta_{peak} - \eta_{floor})
                 \big(1 + \cos(\pi\,\tfrac{k - W}{K - W})\big) \quad (W \le k \le K)

    with :math:`s` = ``start_factor`` (0.1, the source material's value). Step by step equal to
    the source material's scheduler
    ``SequentialLR([LinearLR(start_factor=s, total_iters=W), CosineAnnealingLR(T_max=K - W,
    eta_min=floor)], milestones=[W])`` for :math:`0 \le k \le K`. After ``total`` it stays at
    ``floor`` (torch's cosine would rise again: it is periodic). Warm-up then cosine decay is the
    usual schedule for fine-tuning transformers (e.g. Ouyang et al. 2022, Appendix C).
    Chapter 8, capstone RLHF.

    Args:
        step: updates done so far, ``k >= 0``.
        total: ``K``, step at which the floor is reached.
        peak: learning rate at the end of the warm-up.
        warmup: ``W`` in ``[0, total)``; 0 means no warm-up.
        floor: final learning rate, in ``[0, peak]``.
        start_factor: fraction of ``peak`` at step 0, in (0, 1].
    """
    _check_step(step, total)
    if not isinstance(warmup, int) or not 0 <= warmup < total:
        raise ValueError(f"warmup must be an int in [0, {total}) (total={total}), got {warmup!r}")
    check_range("peak", peak, 0.0)
    check_range("floor", floor, 0.0, peak)
    check_range("start_factor", start_factor, 0.0, 1.0, low_open=True)
    if step < warmup:
        return float(peak * (start_factor + (1.0 - start_factor) * step / warmup))
    progress = (min(step, total) - warmup) / (total - warmup)
    return float(floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress)))


class AdaptiveKLPenalty:
    r"""The adaptive KL penalty coefficient of PPO's :math:`L^{KLPEN}` (PPO paper, Section 4).

    After each policy update, with measured :math:`d = \hat{\mathbb E}[KL[\pi_{old}, \pi]]`:

    * :math:`d < d_{targ}/1.5`: :math:`\beta \leftarrow \beta/2`
    * :math:`d > 1.5\,d_{targ}`: :math:`\beta \leftarrow 2\beta`

    Source: Schulman et al. (2017), Section 4 (the constants 1.5 and 2 are the paper's; it
    reports the algorithm is not sensitive to them). Chapter 4, PPO's clipped objective.

    Args:
        beta: initial coefficient (> 0; the paper's experiments start at 1).
        target_kl: :math:`d_{targ}` (> 0; the paper tries 0.003, 0.01, 0.03).
    """

    def __init__(self, beta: float = 1.0, target_kl: float = 0.01):
        check_range("beta", beta, 0.0, low_open=True)
        check_range("target_kl", target_kl, 0.0, low_open=True)
        self.beta = float(beta)
        self.target_kl = float(target_kl)

    @property
    def value(self) -> float:
        """The current coefficient (same name as :class:`AdaptiveKLController`)."""
        return self.beta

    def update(self, kl: float) -> float:
        """Adapt ``beta`` to the KL measured after an update; return the new ``beta``.

        ``kl`` may be slightly negative: an exact KL rounded in float32, or a sample estimate
        such as :func:`minippo.objectives.kl_k1` (chapter 6). Either way it is below the target
        and ``beta`` halves.
        """
        kl = float(kl)
        if not math.isfinite(kl):
            raise ValueError(f"kl must be a finite number, got {kl!r}")
        if kl < self.target_kl / 1.5:
            self.beta /= 2.0
        elif kl > self.target_kl * 1.5:
            self.beta *= 2.0
        return self.beta

    def __repr__(self) -> str:
        return f"AdaptiveKLPenalty(beta={self.beta:g}, target_kl={self.target_kl:g})"


class AdaptiveKLController:
    r"""Proportional controller for the RLHF KL coefficient (Ziegler et al. 2019).

    .. math:: e_t = \operatorname{clip}\Big(\frac{KL_t - KL_{targ}}{KL_{targ}}, -0.2, 0.2\Big),
              \qquad \beta_{t+1} = \beta_t\,(1 + K_\beta\, e_t), \quad K_\beta = n / H

    where :math:`n` is the number of samples (episodes) in the batch just used and :math:`H` the
    horizon: the larger the horizon, the slower :math:`\beta` moves. ``target=None`` gives a
    fixed coefficient (TRL's ``FixedKLController``). Defaults are TRL's (``init_kl_coef=0.2``,
    ``target=6``, ``horizon=10000``); Ziegler et al. use ``KL_targ`` 6-10 nats and ``K_beta = 0.1``.
    Source: Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences",
    Section 2.2; TRL ``AdaptiveKLController``. Chapter 8, capstone RLHF.
    """

    def __init__(self, init_kl_coef: float = 0.2, target: float | None = 6.0,
                 horizon: int = 10000):
        check_range("init_kl_coef", init_kl_coef, 0.0)
        if target is not None:
            check_range("target", target, 0.0, low_open=True)
        check_range("horizon", horizon, 0, low_open=True)
        self.value = float(init_kl_coef)
        self.target = None if target is None else float(target)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move the coefficient towards the target given the measured KL; return the new value."""
        current_kl = float(current_kl)
        if not math.isfinite(current_kl):
            raise ValueError(f"current_kl must be finite, got {current_kl!r}")
        check_range("n_steps", n_steps, 0)
        if self.target is None:
            return self.value
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)  # proportional error, clipped
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def __repr__(self) -> str:
        return (f"AdaptiveKLController(value={self.value:g}, target={self.target}, "
                f"horizon={self.horizon})")
