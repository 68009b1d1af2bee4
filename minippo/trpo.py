"""Trust Region Policy Optimization (Schulman et al. 2015), with GAE value fitting (2016).

Chapter 3, trust regions and TRPO.  TRPO maximises the importance-sampled surrogate

.. math:: L(\\theta) = \\hat{\\mathbb E}_t\\Big[
          \\frac{\\pi_\\theta(a_t|s_t)}{\\pi_{old}(a_t|s_t)}\\hat A_t\\Big]
          \\quad\\text{s.t.}\\quad \\bar D_{KL}(\\theta_{old}, \\theta)
          = \\hat{\\mathbb E}_t\\big[KL(\\pi_{old}(\\cdot|s_t)\\,\\|\\,
          \\pi_\\theta(\\cdot|s_t))\\big] \\le \\delta

(TRPO paper, eq. 14).  Linearising L and taking the KL to second order gives the natural
gradient step :math:`\\theta = \\theta_{old} + \\omega \\xi` with :math:`(F + \\eta I)\\,\\xi = g`
(chapter 3's letters), solved by conjugate gradient using only Fisher-vector products, scaled
so the quadratic KL equals :math:`\\delta`, and then shrunk by a backtracking line search until
the *exact* KL is within :math:`\\delta` and the surrogate improved (TRPO paper, Appendix C).
The value function is fitted separately by Adam on the lambda-returns, as in the GAE paper
(Schulman et al. 2016, Section 5).

Order of the file: config, objective (surrogate and mean KL), estimator (Fisher-vector product,
conjugate gradient, step size, line search), update step, training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from minippo.advantages import advantages_and_returns, whiten
from minippo.history import History
from minippo.nets import ActorCritic
from minippo.objectives import clipped_surrogate
from minippo.optim import adam, fit_value
from minippo.rollout import Rollout
from minippo.training import TrainingConfig, policy_diagnostics, run_training, start_training
from minippo.utils import check_finite, check_range

__all__ = [
    "TRPOConfig",
    "mean_kl",
    "kl_gradient",
    "fisher_vector_product",
    "conjugate_gradient",
    "natural_step_size",
    "backtracking_line_search",
    "update",
    "train",
]


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TRPOConfig(TrainingConfig):
    """TRPO on CartPole-v1.  Paper values where the paper gives one; sizes tuned for CartPole."""

    num_envs: int = 16  #: parallel environments B
    num_steps: int = 128  #: steps per environment per update T (batch 2048, Spinning Up uses 4000)
    total_steps: int = 200_000  #: environment steps in the whole run
    gamma: float = 0.99  #: discount (GAE paper, Section 6)
    gae_lambda: float = 0.97  #: GAE lambda (Spinning Up's TRPO default; GAE paper uses 0.96-0.99)
    max_kl: float = 0.01  #: trust-region radius delta (TRPO paper, Section 8: 0.01)
    cg_iters: int = 10  #: conjugate-gradient iterations (TRPO paper, Appendix C: 10)
    cg_damping: float = 0.1  #: damping eta in (F + eta I) (modular_rl, Spinning Up: 0.1)
    backtrack_ratio: float = 0.5  #: step shrink factor per line-search try (Appendix C: 0.5)
    max_backtracks: int = 10  #: line-search tries (Spinning Up: 10)
    vf_learning_rate: float = 1e-3  #: Adam learning rate of the value function (Spinning Up: 1e-3)
    vf_epochs: int = 5  #: passes over the batch for the value function per update
    vf_minibatches: int = 4  #: minibatches per value epoch
    norm_adv: bool = True  #: whiten advantages (Engstrom et al. 2020)

    def __post_init__(self):
        super().__post_init__()
        check_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_range("max_kl", self.max_kl, 0.0, low_open=True)
        check_range("cg_iters", self.cg_iters, 1)
        check_range("cg_damping", self.cg_damping, 0.0)
        check_range("backtrack_ratio", self.backtrack_ratio, 0.0, 1.0, low_open=True,
                    high_open=True)
        check_range("max_backtracks", self.max_backtracks, 1)
        check_range("vf_learning_rate", self.vf_learning_rate, 0.0, low_open=True)
        check_range("vf_epochs", self.vf_epochs, 0)
        check_range("vf_minibatches", self.vf_minibatches, 1, self.batch_size)


# --------------------------------------------------------------------------- objective
def mean_kl(policy: ActorCritic, obs: Tensor, old_dist: Distribution) -> Tensor:
    r"""Mean KL from the old to the current policy over the sampled states, exact over actions.

    .. math:: \bar D_{KL}(\theta_{old}, \theta) = \frac1N \sum_{n}
              KL\big(\pi_{old}(\cdot|s_n)\,\|\,\pi_\theta(\cdot|s_n)\big)

    Source: TRPO paper (Schulman et al. 2015), eqs. 12 and 14.  Chapter 3, trust regions and TRPO.
    ``old_dist`` is ``policy.dist(obs)`` taken under ``torch.no_grad()`` before the step.
    """
    return kl_divergence(old_dist, policy.dist(obs)).mean()


# --------------------------------------------------------------------------- estimator
def kl_gradient(policy: ActorCritic, obs: Tensor) -> Tensor:
    r"""Flat :math:`\nabla_\theta \bar D_{KL}(\theta_{old}, \theta)` at
    :math:`\theta = \theta_{old}`, kept with its graph so that it can be differentiated again
    (it is zero, its derivative F is not).

    Computed once per update and reused by every :func:`fisher_vector_product` of the CG loop.
    """
    params = policy.policy_parameters()
    with torch.no_grad():
        old_dist = policy.dist(obs)  # same parameters, no graph: KL is 0 with gradient 0 here
    kl = mean_kl(policy, obs, old_dist)
    grads = torch.autograd.grad(kl, params, create_graph=True)
    return torch.cat([g.reshape(-1) for g in grads])  # (W,)


def fisher_vector_product(policy: ActorCritic, obs: Tensor, vector: Tensor, damping: float = 0.1,
                          grad_kl: Tensor | None = None) -> Tensor:
    r"""Damped Fisher-vector product :math:`(F + \eta I)\,v` by double backpropagation.

    :math:`F = \nabla^2_\theta \bar D_{KL}(\theta_{old}, \theta)\big|_{\theta=\theta_{old}}`,
    the Hessian of the mean KL at the current parameters, which equals the Fisher information
    :math:`\frac1N\sum_n \mathbb E_{a\sim\pi}[\nabla\log\pi(a|s_n)\nabla\log\pi(a|s_n)^\top]`
    exactly (the expectation over actions is analytic, not sampled).  Computed without forming
    F: :math:`F v = \nabla_\theta\big((\nabla_\theta \bar D_{KL})^\top v\big)`.
    Source: TRPO paper (Schulman et al. 2015), Appendix C.1.  Chapter 3, trust regions and TRPO.

    Args:
        policy: the network; only ``policy.policy_parameters()`` are differentiated.
        obs: (N, O) sampled states.
        vector: (P,) flat vector over the policy parameters.
        damping: :math:`\eta \ge 0`, keeps CG stable where F is near singular.
        grad_kl: :func:`kl_gradient` of ``policy`` on ``obs``, to reuse across calls
            (computed here when ``None``).
    Returns:
        (P,) flat tensor.
    """
    if grad_kl is None:
        grad_kl = kl_gradient(policy, obs)
    hvp = torch.autograd.grad(grad_kl @ vector, policy.policy_parameters(), retain_graph=True)
    return torch.cat([h.reshape(-1) for h in hvp]) + damping * vector  # (W,)


def conjugate_gradient(Avp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10,
                       tol: float = 1e-10) -> Tensor:
    r"""Approximately solve :math:`(F + \eta I)\,\xi = g` given only the product
    :math:`v \mapsto (F + \eta I)\,v` (``Avp``, any symmetric positive-definite matrix) and
    :math:`g` (``b``).

    In chapter 3's notation (its conjugate-gradient display): start at :math:`\xi_0 = 0`, residual
    :math:`g_0 = g`, direction :math:`v_0 = g_0`, and repeat
    :math:`\omega_k = g_k^\top g_k / v_k^\top (F + \eta I)\, v_k`,
    :math:`\xi_{k+1} = \xi_k + \omega_k v_k`, :math:`g_{k+1} = g_k - \omega_k (F + \eta I)\, v_k`,
    :math:`v_{k+1} = g_{k+1} + (g_{k+1}^\top g_{k+1} / g_k^\top g_k)\, v_k`;
    stop after ``iters`` steps or when :math:`g_k^\top g_k <` ``tol``.  The code's ``x``, ``r``,
    ``p`` and ``alpha`` are :math:`\xi_k`, :math:`g_k`, :math:`v_k` and :math:`\omega_k`.  Exact
    after dim(b) steps in exact arithmetic.  Source: Nocedal & Wright (2006), Algorithm 5.2; TRPO
    paper, Appendix C.  Chapter 3, trust regions and TRPO.
    """
    x = torch.zeros_like(b)  # (W,)
    r = b.clone()  # (W,) residual b - A x
    p = b.clone()  # (W,) search direction
    rr = r @ r
    for _ in range(iters):
        if rr < tol:
            break
        Ap = Avp(p)  # (W,)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def natural_step_size(step_dir: Tensor, F_step_dir: Tensor, max_kl: float) -> Tensor:
    r"""The step length :math:`\omega = \sqrt{2\delta / \xi^\top F \xi}` that puts the full step
    :math:`\Delta = \omega\xi` on the boundary of the quadratic trust region
    :math:`\tfrac12 (\omega\xi)^\top F (\omega\xi) = \delta`; ``step_dir`` is :math:`\xi` and
    ``F_step_dir`` the product :math:`F\xi` (the package passes :math:`(F + \eta I)\,\xi`).

    Source: TRPO paper (Schulman et al. 2015), Appendix C, which writes :math:`\beta` and
    :math:`s`.  Chapter 3, trust regions and TRPO, section "The step size and the line search".
    """
    return torch.sqrt(2.0 * max_kl / (step_dir @ F_step_dir).clamp_min(1e-12))


def backtracking_line_search(evaluate: Callable[[Tensor], tuple[float, float]], x_old: Tensor,
                             full_step: Tensor, max_kl: float, backtrack_ratio: float = 0.5,
                             max_backtracks: int = 10) -> tuple[Tensor, int]:
    r"""Shrink the step until the constraint holds and the objective improved.

    Tries :math:`x = x_{old} + c^k\,\Delta` for :math:`k = 0, 1, \dots`, where :math:`c` is
    ``backtrack_ratio`` (1/2 in chapter 3) and :math:`\Delta = \omega\xi` the full step, and
    accepts the first with :math:`\text{kl}(x) \le \delta` **and**
    :math:`\text{loss}(x) < \text{loss}(x_{old})`, where ``evaluate(x)`` returns
    ``(loss, kl)`` (loss = negated surrogate).  If no try passes, the parameters stay at
    ``x_old``: TRPO never takes a step outside the trust region.  Source: TRPO paper
    (Schulman et al. 2015), Appendix C ("we perform the line search ... the constraint is
    satisfied and the surrogate improves").  Chapter 3, trust regions and TRPO.

    Returns:
        ``(x, k)``: the accepted parameters and the number of halvings used, or ``(x_old, -1)``.
    """
    loss_old, _ = evaluate(x_old)
    for k in range(max_backtracks):
        x = x_old + backtrack_ratio ** k * full_step  # (W,)
        loss, kl = evaluate(x)
        if kl <= max_kl and loss < loss_old:
            return x, k
    evaluate(x_old)  # leave the caller's parameters where they started
    return x_old, -1


# --------------------------------------------------------------------------- update step
def _flat_params(params: list[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])  # (W,)


@torch.no_grad()
def _set_flat_params(params: list[Tensor], flat: Tensor) -> None:
    i = 0
    for p in params:
        p.copy_(flat[i:i + p.numel()].view_as(p))
        i += p.numel()


@torch.no_grad()
def _surrogate_and_kl(policy: ActorCritic, obs: Tensor, actions: Tensor, logp_old: Tensor,
                      adv: Tensor, old_dist: Distribution, flat: Tensor) -> tuple[float, float]:
    """Set the policy to ``flat`` and return ``(-L(theta), mean KL)`` for the line search."""
    _set_flat_params(policy.policy_parameters(), flat)
    d = policy.dist(obs)
    loss = clipped_surrogate(d.log_prob(actions), logp_old, adv, None)  # -E[r A], eq. 14
    return float(loss), float(kl_divergence(old_dist, d).mean())


def update(agent: ActorCritic, optimizer: torch.optim.Optimizer, rollout: Rollout,
           config: TRPOConfig, *, update_index: int = 1) -> dict[str, float]:
    """One TRPO update: GAE, a natural-gradient policy step with line search, value fitting.

    ``optimizer`` updates the critic only (``agent.value_parameters()``).  Returns the
    metric dictionary's metrics under TRPO's prefix (``trpo/kl_divergence``, ...) plus ``trpo/mean_kl``
    (the exact mean KL the line search constrained), ``trpo/backtracks`` (-1: step rejected)
    and ``trpo/step_size`` (beta).
    """
    adv, ret = advantages_and_returns(rollout, config.gamma, config.gae_lambda)
    adv, ret = adv.flatten(), ret.flatten()  # (N,), (N,) ret: lambda-returns, the value targets
    if config.norm_adv:
        adv = whiten(adv)  # (N,)
    batch = rollout.flatten()
    obs, actions, logp_old = batch["obs"], batch["actions"], batch["logp"]

    # Policy: natural gradient direction by CG, scaled to the trust region, then line search.
    params = agent.policy_parameters()
    logp, _, _ = agent.evaluate(obs, actions)  # (N,)
    loss = clipped_surrogate(logp, logp_old, adv, None)  # -L(theta), eq. 14 (no clipping)
    check_finite(update_index, policy_loss=loss)
    g = -_flat_params(torch.autograd.grad(loss, params))  # (W,) gradient of L
    Fvp = partial(fisher_vector_product, agent, obs, damping=config.cg_damping,
                  grad_kl=kl_gradient(agent, obs))
    step_dir = conjugate_gradient(Fvp, g, config.cg_iters)  # (W,) ~ F^-1 g
    beta = natural_step_size(step_dir, Fvp(step_dir), config.max_kl)
    with torch.no_grad():
        old_dist = agent.dist(obs)
    evaluate = partial(_surrogate_and_kl, agent, obs, actions, logp_old, adv, old_dist)
    x_new, backtracks = backtracking_line_search(evaluate, _flat_params(params), beta * step_dir,
                                                 config.max_kl, config.backtrack_ratio,
                                                 config.max_backtracks)
    policy_loss, kl_exact = evaluate(x_new)  # also leaves the policy at x_new

    # Value function: Adam on 0.5 (V - R)^2 (GAE paper, Section 5, with Adam for the paper's
    # trust-region solver, as in Spinning Up).
    v_loss = fit_value(agent, optimizer, obs, ret, config.vf_epochs, config.vf_minibatches,
                       update_index)

    metrics = policy_diagnostics(agent, batch, ret, "trpo")
    metrics.update({
        "trpo/policy_loss": policy_loss,
        "trpo/value_loss": v_loss,
        "trpo/mean_advantage": float(adv.mean()),
        "trpo/mean_kl": kl_exact,
        "trpo/backtracks": float(backtracks),
        "trpo/step_size": float(beta),
    })
    return metrics


# --------------------------------------------------------------------------- training loop
def train(config: TRPOConfig = TRPOConfig(), env=None, *, seed: int = 0, progress: bool = True,
          stop_at_return: float | None = None) -> tuple[ActorCritic, History]:
    """Train TRPO; ``env=None`` is ``CartPole(config.num_envs, seed=seed)``.

    The policy takes natural-gradient steps (no optimizer); the critic learns with Adam at
    ``vf_learning_rate``.

    :func:`minippo.training.run_training` alternates rollouts of ``config.batch_size`` steps and
    :func:`update` until ``config.total_steps`` environment steps, or until the mean of the last
    ``EPISODE_WINDOW`` (20) finished episodes reaches ``stop_at_return``.  Returns
    ``(agent, history)``: one row per update with the ``trpo/...`` metrics of :func:`update`,
    ``rollout/...`` and ``time/...``, and one row per finished episode.
    """
    run = start_training(config, env, seed)
    optimizer = adam(run.agent.value_parameters(), config.vf_learning_rate, config.adam_eps)  # the critic's; the policy takes natural steps
    step = partial(update, run.agent, optimizer, config=config)
    return run_training(run, config, step, "trpo", progress, stop_at_return)
