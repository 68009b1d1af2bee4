"""Losses and diagnostics of policy-gradient methods, one function per equation.

Order of the chapters: the vanilla policy-gradient loss (Chapter 1), the probability ratio and
the KL estimators (Chapter 3), PPO's clipped and KL-penalised surrogates, value losses and the
entropy bonus (Chapter 4), and the diagnostics a PPO user watches (Chapter 5).

Conventions. Every loss is a scalar to *minimise* (the negated objective of the paper) and
averages over all entries, or over the entries where ``mask`` is true: the language-model
trainer passes ``(B, L)`` token tensors with the response mask (TRL's ``masked_mean``), the
CartPole trainer passes flat ``(N,)`` minibatches. ``logp`` is the log-probability of the taken
action under the policy being optimised, ``logp_old`` under the policy that collected the data.

KL direction. ``kl_k1/k2/k3(logp_q, logp_p)`` estimate :math:`KL(q \\| p)` from samples
:math:`x \\sim q`: the FIRST argument is the distribution the samples came from. PPO's
``ppo/kl_divergence`` is ``kl_k3(logp_old, logp).mean()`` (data from the old policy,
KL(old || new), CleanRL's ``approx_kl``); RLHF's per-token penalty is
``kl_k1(logp, logp_ref)`` (samples from the policy, KL(policy || reference)).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from minippo.utils import check_range, check_same_shape

__all__ = [
    "masked_mean",
    "policy_gradient_loss",
    "probability_ratio",
    "clipped_surrogate",
    "kl_penalty_surrogate",
    "value_loss",
    "clipped_value_loss",
    "entropy_bonus",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "clip_fraction",
    "explained_variance",
    "update_diagnostics",
    "DIAGNOSTIC_CLIP_EPS",
    "TARGET_KL_FACTOR",
]

#: The clipping epsilon at which algorithms without a clip (REINFORCE, A2C, TRPO, unclipped PPO)
#: report their would-be clip fraction: the PPO paper's 0.2 (book/metrics.md).
DIAGNOSTIC_CLIP_EPS = 0.2


def masked_mean(x: Tensor, mask: Tensor | None, dim: int | tuple[int, ...] | None = None) -> Tensor:
    r"""Mean of ``x`` over the entries where ``mask`` is true: :math:`\sum m x / \sum m`.

    ``mask=None`` is the plain mean. ``dim`` reduces only those dimensions (e.g. ``dim=1``: one
    mean per sequence of a ``(B, L)`` batch). A slice with an empty mask gives NaN, as 0/0.
    Source: TRL's ``masked_mean``. Chapter 6, from CartPole to tokens.
    """
    if mask is None:
        return x.mean() if dim is None else x.mean(dim)
    check_same_shape(x=x, mask=mask)
    m = mask.to(x.dtype)
    # where, not x * m: an inf outside the mask (a huge ratio on a PAD token) would give inf * 0 = NaN
    xm = torch.where(mask.bool(), x, torch.zeros_like(x))
    if dim is None:
        return xm.sum() / m.sum()
    return xm.sum(dim) / m.sum(dim)


def _mean(x: Tensor, mask: Tensor | None) -> Tensor:
    return x.mean() if mask is None else masked_mean(x, mask)


def _check_batch(mask: Tensor | None, **tensors: Tensor) -> None:
    """Equal shapes, at least one sample, and a mask that selects at least one: a loss over an
    empty batch would be NaN (0/0) and poison every parameter it touches."""
    check_same_shape(**tensors)
    name, first = next(iter(tensors.items()))
    if first.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(first.shape)}): a loss needs at least "
                         "one sample")
    if mask is not None:
        check_same_shape(**{name: first, "mask": mask})
        if not bool(mask.any()):
            raise ValueError("mask selects no entries: a loss needs at least one sample")


def policy_gradient_loss(logp: Tensor, adv: Tensor, *, mask: Tensor | None = None) -> Tensor:
    r"""Vanilla policy-gradient loss
    :math:`L^{PG} = -\hat{\mathbb E}_t[\log\pi_\theta(a_t|s_t)\,\hat A_t]`.

    Its gradient is the policy-gradient estimator
    :math:`-\hat{\mathbb E}[\nabla\log\pi\,\hat A]`; the loss value itself means nothing.
    ``adv`` must not carry gradient (detach returns/advantages first).
    Source: PPO paper (Schulman et al. 2017), eqs. 1-2; Williams (1992) REINFORCE.
    Chapter 1, policy gradient.
    """
    _check_batch(mask, logp=logp, adv=adv)
    return -_mean(logp * adv, mask)


def probability_ratio(logp: Tensor, logp_old: Tensor) -> Tensor:
    r"""Probability ratio :math:`\rho_t(\theta) = \pi_\theta(a_t|s_t) / \pi_{\theta_{old}}(a_t|s_t)
    = \exp(\log\pi_\theta - \log\pi_{\theta_{old}})`.

    Computed from log-probabilities so it never divides by a tiny probability.
    Source: PPO paper (Schulman et al. 2017), Section 3 (before eq. 6); TRPO paper eq. 14.
    Chapter 3, trust regions and TRPO.
    """
    check_same_shape(logp=logp, logp_old=logp_old)
    return torch.exp(logp - logp_old)


def clipped_surrogate(logp: Tensor, logp_old: Tensor, adv: Tensor, clip_eps: float | None, *,
                      mask: Tensor | None = None) -> Tensor:
    r"""PPO's clipped surrogate, as a loss: :math:`-L^{CLIP}`.

    .. math:: L^{CLIP}(\theta) = \hat{\mathbb E}_t\big[\min\big(\rho_t(\theta)\hat A_t,\;
              \operatorname{clip}(\rho_t(\theta), 1-\epsilon, 1+\epsilon)\,\hat A_t\big)\big]

    The min makes it a pessimistic bound: moving the ratio beyond :math:`1\pm\epsilon` in the
    direction the advantage favours earns nothing (zero gradient), moving it the other way is
    fully penalised. At :math:`\rho = 1` its gradient equals the vanilla policy gradient.
    ``clip_eps=None`` (or ``inf``) gives the unclipped ratio surrogate
    :math:`-\hat{\mathbb E}[\rho_t \hat A_t]` (PPO paper eq. 6, the "no clipping" ablation).
    Source: PPO paper (Schulman et al. 2017), eq. 7. Chapter 4, PPO's clipped objective.

    Args:
        logp: ``(N,)`` or ``(B, L)`` log-probs under the current policy (with gradient).
        logp_old: same shape, from the policy that collected the data (no gradient).
        adv: same shape, advantages (no gradient).
        clip_eps: :math:`\epsilon` in (0, 1], or ``None``/``inf`` for no clipping.
        mask: optional valid-entry mask (tokens); the mean is over masked entries.
    Returns:
        scalar loss tensor.
    """
    _check_batch(mask, logp=logp, logp_old=logp_old, adv=adv)
    ratio = probability_ratio(logp, logp_old)  # (N,)
    if clip_eps is None or math.isinf(clip_eps):
        return -_mean(ratio * adv, mask)
    check_range("clip_eps", clip_eps, 0.0, 1.0, low_open=True)
    surr1 = ratio * adv  # (N,)
    surr2 = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv  # (N,)
    return -_mean(torch.min(surr1, surr2), mask)


def kl_penalty_surrogate(logp: Tensor, logp_old: Tensor, adv: Tensor, beta: float,
                         kl: Tensor | None = None, *, mask: Tensor | None = None) -> Tensor:
    r"""PPO's KL-penalised surrogate, as a loss: :math:`-L^{KLPEN}`.

    .. math:: L^{KLPEN}(\theta) = \hat{\mathbb E}_t\big[\rho_t(\theta)\hat A_t
              - \beta\, KL[\pi_{\theta_{old}}(\cdot|s_t), \pi_\theta(\cdot|s_t)]\big]

    ``kl``: per-sample (or per-state exact) KL(old || new) with gradient; if ``None`` it is
    estimated from the sampled actions by ``kl_k3(logp_old, logp)`` (unbiased, never negative).
    ``beta`` is adapted between updates by ``minippo.schedules.AdaptiveKLPenalty``.
    Source: PPO paper (Schulman et al. 2017), eq. 8 (Section 4). Chapter 4, PPO's clipped
    objective.
    """
    _check_batch(mask, logp=logp, logp_old=logp_old, adv=adv)
    check_range("beta", beta, 0.0)
    ratio = probability_ratio(logp, logp_old)  # (N,)
    if kl is None:
        kl = kl_k3(logp_old, logp)  # (N,): x ~ old policy, KL(old || new)
    kl = torch.as_tensor(kl, dtype=ratio.dtype)
    kl_term = _mean(kl, mask) if kl.dim() > 0 else kl  # per-sample KLs or an already-averaged one
    return -(_mean(ratio * adv, mask) - beta * kl_term)


def value_loss(v: Tensor, ret: Tensor, *, mask: Tensor | None = None) -> Tensor:
    r"""Squared-error value loss
    :math:`L^{VF} = \tfrac12\,\hat{\mathbb E}_t[(V_\theta(s_t) - \hat R_t)^2]`.

    The 1/2 is CleanRL's and TRL's convention (SB3 omits it; it only rescales ``vf_coef``).
    Source: PPO paper (Schulman et al. 2017), eq. 9 (the :math:`L^{VF}_t` term).
    Chapter 2, value functions and GAE.
    """
    _check_batch(mask, v=v, ret=ret)
    return 0.5 * _mean((v - ret) ** 2, mask)


def clipped_value_loss(v: Tensor, v_old: Tensor, ret: Tensor, clip_eps: float, *,
                       mask: Tensor | None = None) -> Tensor:
    r"""PPO2-style clipped value loss.

    .. math:: V^{clip} = V_{old} + \operatorname{clip}(V_\theta - V_{old}, -\epsilon, \epsilon),
              \quad L = \tfrac12\,\hat{\mathbb E}\big[\max\big((V_\theta - \hat R)^2,
              (V^{clip} - \hat R)^2\big)\big]

    Not in the PPO paper: it comes from OpenAI Baselines' ``ppo2`` and is used by CleanRL
    (``clip_vloss``) and TRL (``cliprange_value``). Engstrom et al. (2020, "Implementation
    Matters") found it does not help and can hurt. Chapter 5, PPO in practice.
    """
    _check_batch(mask, v=v, v_old=v_old, ret=ret)
    check_range("clip_eps", clip_eps, 0.0, low_open=True)
    v_clipped = v_old + torch.clamp(v - v_old, -clip_eps, clip_eps)  # (N,)
    loss_unclipped = (v - ret) ** 2  # (N,)
    loss_clipped = (v_clipped - ret) ** 2  # (N,)
    return 0.5 * _mean(torch.max(loss_unclipped, loss_clipped), mask)


def entropy_bonus(entropy: Tensor, *, mask: Tensor | None = None) -> Tensor:
    r"""Mean policy entropy :math:`S[\pi_\theta](s_t)`, the bonus PPO *adds* to its objective.

    The total loss is ``policy_loss + vf_coef * value_loss - ent_coef * entropy_bonus(H)``.
    Source: PPO paper (Schulman et al. 2017), eq. 9 (the :math:`c_2 S` term); Mnih et al. 2016.
    Chapter 4, PPO's clipped objective.
    """
    _check_batch(mask, entropy=entropy)
    return _mean(entropy, mask)


def kl_k1(logp_q: Tensor, logp_p: Tensor) -> Tensor:
    r"""Per-sample estimate :math:`k_1 = -\log r` of :math:`KL(q\|p)`, x ~ q.

    With :math:`\log r = \log p(x) - \log q(x)`. Unbiased, but high variance, and negative for
    every sample with :math:`p(x) > q(x)` (how many depends on the pair; chapter 6 measures it).
    RLHF's per-token KL penalty (Ziegler et al. 2019; TRL) is this one.
    Source: J. Schulman, "Approximating KL Divergence" (2020). Chapter 3, trust regions and TRPO.

    Args:
        logp_q: log-probabilities of the samples under the SAMPLING distribution q.
        logp_p: log-probabilities of the same samples under p.
    """
    check_same_shape(logp_q=logp_q, logp_p=logp_p)
    return logp_q - logp_p


def kl_k2(logp_q: Tensor, logp_p: Tensor) -> Tensor:
    r"""Per-sample estimate :math:`k_2 = \tfrac12 (\log r)^2` of :math:`KL(q\|p)`, x ~ q.

    Never negative and low variance, but biased (its expectation is an f-divergence that agrees
    with KL to second order, so the bias is small when p is close to q).
    Source: J. Schulman, "Approximating KL Divergence" (2020). Chapter 3, trust regions and TRPO.
    """
    check_same_shape(logp_q=logp_q, logp_p=logp_p)
    return 0.5 * (logp_p - logp_q) ** 2


def kl_k3(logp_q: Tensor, logp_p: Tensor) -> Tensor:
    r"""Per-sample estimate :math:`k_3 = (r - 1) - \log r` of :math:`KL(q\|p)`, x ~ q.

    Unbiased (:math:`\mathbb E_q[r - 1] = 0`) and never negative (:math:`\log r \le r - 1`),
    with low variance while :math:`r = p/q` stays moderate; where p puts mass that q rarely
    samples, a rare large :math:`r` makes it heavy-tailed, and a typical batch underestimates
    (chapter 6 measures both). The estimator behind ``ppo/kl_divergence`` (CleanRL's ``approx_kl``,
    ``kl_k3(logp_old, logp)``) and GRPO's KL term.
    Source: J. Schulman, "Approximating KL Divergence" (2020). Chapter 3, trust regions and TRPO.
    """
    check_same_shape(logp_q=logp_q, logp_p=logp_p)
    log_r = logp_p - logp_q
    return torch.expm1(log_r) - log_r


#: ``target_kl`` early stopping: an update's epochs stop before a minibatch step whose k3
#: estimate of KL(old || new) on that minibatch, measured before the step, exceeds
#: ``TARGET_KL_FACTOR * target_kl``.  The rule of Spinning Up's PPO (``1.5 * target_kl``, checked
#: before each step), Stable-Baselines3 and TRL's original PPOTrainer; CartPole's PPO and
#: RLHF-PPO both use it (Chapter 5).
TARGET_KL_FACTOR = 1.5


def clip_fraction(ratio: Tensor, clip_eps: float = DIAGNOSTIC_CLIP_EPS, *,
                  mask: Tensor | None = None) -> Tensor:
    r"""Fraction of samples whose ratio lies outside :math:`[1-\epsilon, 1+\epsilon]`:
    :math:`\hat{\mathbb E}[\,|r_t - 1| > \epsilon\,]`.

    Source: CleanRL's ``clipfracs`` / SB3's ``clip_fraction`` / TRL's ``policy/clipfrac``.
    Chapter 5, PPO in practice.
    """
    check_range("clip_eps", clip_eps, 0.0, low_open=True)
    return _mean(((ratio - 1.0).abs() > clip_eps).to(torch.get_default_dtype()), mask)


def explained_variance(v: Tensor, ret: Tensor, *, mask: Tensor | None = None) -> float:
    r"""Explained variance :math:`1 - \operatorname{Var}[\hat R - V] / \operatorname{Var}[\hat R]`.

    1: the value function predicts the returns perfectly; 0: no better than predicting the mean;
    negative: worse than that. NaN when the returns have zero variance (as SB3 and CleanRL).
    Source: Stable-Baselines3 ``explained_variance``; CleanRL's ``explained_var``.
    Chapter 5, PPO in practice.
    """
    check_same_shape(v=v, ret=ret)
    v, ret = v.detach().double(), ret.detach().double()
    if mask is not None:
        m = mask.bool()
        v, ret = v[m], ret[m]
    var_ret = ret.var(unbiased=False) if ret.numel() > 0 else torch.tensor(0.0)
    if var_ret == 0:
        return float("nan")
    return float(1.0 - (ret - v).var(unbiased=False) / var_ret)


def update_diagnostics(logp_old: Tensor, logp: Tensor, entropy: Tensor, v_old: Tensor | None,
                       ret: Tensor | None, clip_eps: float = DIAGNOSTIC_CLIP_EPS, *,
                       mask: Tensor | None = None) -> dict[str, float]:
    r"""What one update changed, measured *after* it on the whole batch it was computed from.

    ``logp`` and ``entropy`` are the updated policy's, on the batch's own states and actions (or
    tokens); ``logp_old``, ``v_old`` and ``ret`` were stored with the batch.  Returns

    * ``kl_divergence``: mean :func:`kl_k3` estimate of :math:`KL(\pi_{old} \| \pi_{new})` (the
      actions were drawn from the old policy, as k3 requires);
    * ``clip_fraction``: share of ratios outside :math:`[1-\epsilon, 1+\epsilon]`
      (:func:`clip_fraction`; at :data:`DIAGNOSTIC_CLIP_EPS` for algorithms that do not clip);
    * ``ratio_mean``, ``ratio_std``: of the probability ratios;
    * ``entropy``: mean policy entropy after the update;
    * ``explained_variance``: of the returns by the values that produced the advantages
      (:func:`explained_variance`; how well the critic did, as SB3 and CleanRL measure it);
    * ``value_pred_mean``: mean of those values.

    Without a critic (GRPO, RLOO: ``v_old = ret = None``) the last two are left out.

    Names are bare; a trainer prefixes them with its own (``ppo/kl_divergence``,
    ``trpo/kl_divergence``, ...).  Flat ``(N,)`` inputs, or ``(B, L)`` tokens with ``mask``.
    Measuring once after the update, rather than averaging what each minibatch saw before its
    step (CleanRL, SB3), gives the KL and clip fraction of the policy the next rollout will use
    (book/metrics.md).  Chapter 5, PPO in practice.
    """
    ratio = probability_ratio(logp, logp_old)  # (N,) or (B, L)
    r = ratio if mask is None else ratio[mask.bool()]  # (N,) valid samples
    metrics = {
        "kl_divergence": float(masked_mean(kl_k3(logp_old, logp), mask)),
        "clip_fraction": float(clip_fraction(r, clip_eps)),
        "ratio_mean": float(r.mean()),
        "ratio_std": float(r.std()) if r.numel() > 1 else 0.0,
        "entropy": float(masked_mean(entropy, mask)),
    }
    if v_old is not None:
        metrics["explained_variance"] = explained_variance(v_old, ret, mask=mask)
        metrics["value_pred_mean"] = float(masked_mean(v_old, mask))
    return metrics
