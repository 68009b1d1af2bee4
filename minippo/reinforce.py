"""REINFORCE: the Monte-Carlo policy gradient (Williams 1992), with an optional learned baseline.

Chapter 1, policy gradient.  The gradient of the expected return is estimated from sampled
episodes by the score-function (likelihood-ratio) estimator with reward-to-go,

.. math:: \\nabla_\\theta J(\\theta) \\approx \\hat{\\mathbb E}_t\\big[\\nabla_\\theta \\log
          \\pi_\\theta(a_t|s_t)\\,(G_t - b(s_t))\\big],

where :math:`G_t` is the discounted reward-to-go and :math:`b(s_t) = V_\\phi(s_t)` a learned
baseline (``baseline=True``) that lowers the variance without adding bias (Williams 1992,
Section 6; Sutton & Barto 2018, Section 13.4).  One gradient step per batch of experience: the
data are on-policy only for the policy that collected them.

Batches are cut every ``num_steps`` steps, so an episode may be unfinished at the end of a batch.
With a baseline its missing future is bootstrapped from V (as Spinning Up's VPG does); without
one the reward-to-go simply stops there, which biases those steps' returns low (one reason to
keep ``num_steps`` long).

Order of the file: config, objective (the policy-gradient loss lives in
:mod:`minippo.objectives`), estimator (returns and advantages), update step, training loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from minippo.advantages import lambda_returns, reward_to_go, whiten
from minippo.history import History
from minippo.nets import ActorCritic
from minippo.objectives import policy_gradient_loss
from minippo.optim import adam, fit_value, optimizer_step
from minippo.rollout import Rollout
from minippo.training import TrainingConfig, policy_diagnostics, run_training, start_training
from minippo.utils import check_finite, check_range

__all__ = ["ReinforceConfig", "returns_and_advantages", "update", "train"]


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ReinforceConfig(TrainingConfig):
    """REINFORCE on CartPole-v1 (sizes and learning rates tuned for CartPole; see comments)."""

    num_envs: int = 16  #: parallel environments B
    num_steps: int = 256  #: steps per environment per batch T (long: few cut-off episodes)
    total_steps: int = 400_000  #: environment steps in the whole run
    gamma: float = 0.99  #: discount (Spinning Up's VPG: 0.99)
    learning_rate: float = 3e-3  #: Adam learning rate of the policy (tuned; Spinning Up's VPG: 3e-4)
    baseline: bool = True  #: subtract a learned V(s) from the reward-to-go
    vf_learning_rate: float = 1e-3  #: Adam learning rate of the baseline (Spinning Up: 1e-3)
    vf_epochs: int = 5  #: passes over the batch for the baseline per update
    vf_minibatches: int = 4  #: minibatches per baseline epoch
    norm_adv: bool = True  #: whiten the weights (R - b) of the score function (Chapter 5)

    def __post_init__(self):
        super().__post_init__()
        check_range("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_range("vf_learning_rate", self.vf_learning_rate, 0.0, low_open=True)
        check_range("vf_epochs", self.vf_epochs, 0)
        check_range("vf_minibatches", self.vf_minibatches, 1, self.batch_size)


# --------------------------------------------------------------------------- estimator
def returns_and_advantages(rollout: Rollout, gamma: float, baseline: bool) -> tuple[Tensor, Tensor]:
    r"""Reward-to-go :math:`G_t` and the weights :math:`G_t - b(s_t)` (T, B).

    With a baseline, :math:`G_t` is the Monte-Carlo return bootstrapped from V only where
    the episode was cut off (time limit or end of the batch): the lambda-return with
    :math:`\lambda = 1`.  Without one it is the plain reward-to-go, and the weights are
    :math:`G_t` itself.  Source: Williams (1992); Sutton & Barto (2018), Section 13.4.
    Chapter 1, policy gradient.
    """
    if baseline:
        ret = lambda_returns(rollout.rewards, rollout.values, rollout.next_values,
                             rollout.terminated, rollout.truncated, gamma, 1.0)  # (T, B)
        return ret, ret - rollout.values  # (T, B), (T, B)
    ret = reward_to_go(rollout.rewards, rollout.terminated | rollout.truncated, gamma)  # (T, B)
    return ret, ret


# --------------------------------------------------------------------------- update step
def update(agent: ActorCritic, optimizer: torch.optim.Optimizer, rollout: Rollout,
           config: ReinforceConfig, *, value_optimizer: torch.optim.Optimizer | None = None,
           update_index: int = 1) -> dict[str, float]:
    """One policy-gradient step on the whole batch, then (with a baseline) fit V by regression.

    ``optimizer`` holds the policy parameters, ``value_optimizer`` the baseline's.  Returns the
    ``reinforce/...`` metrics (the metric dictionary's set under REINFORCE's own prefix).
    """
    ret, adv = returns_and_advantages(rollout, config.gamma, config.baseline)
    ret, adv = ret.flatten(), adv.flatten()  # (N,), (N,)
    if config.norm_adv:
        adv = whiten(adv)  # (N,)
    batch = rollout.flatten()
    obs, actions = batch["obs"], batch["actions"]

    logp = agent.dist(obs).log_prob(actions)  # (N,)
    pg_loss = policy_gradient_loss(logp, adv)
    check_finite(update_index, policy_loss=pg_loss)
    optimizer_step(agent.policy_parameters(), optimizer, pg_loss, None, foreach=True)

    v_loss = math.nan
    if config.baseline and value_optimizer is not None:
        v_loss = fit_value(agent, value_optimizer, obs, ret, config.vf_epochs,
                           config.vf_minibatches, update_index)

    metrics = policy_diagnostics(agent, batch, ret, "reinforce")
    metrics.update({
        "reinforce/policy_loss": pg_loss.item(),
        "reinforce/value_loss": v_loss,
        "reinforce/mean_advantage": float(adv.mean()),
    })
    return metrics


# --------------------------------------------------------------------------- training loop
def train(config: ReinforceConfig = ReinforceConfig(), env=None, *, seed: int = 0,
          progress: bool = True,
          stop_at_return: float | None = None) -> tuple[ActorCritic, History]:
    """Train REINFORCE; ``env=None`` is ``CartPole(config.num_envs, seed=seed)``.

    The policy learns with Adam at ``learning_rate``, the baseline (the critic) with its own Adam
    at ``vf_learning_rate``.

    :func:`minippo.training.run_training` alternates rollouts of ``config.batch_size`` steps and
    :func:`update` until ``config.total_steps`` environment steps, or until the mean of the last
    ``EPISODE_WINDOW`` (20) finished episodes reaches ``stop_at_return``.  Returns
    ``(agent, history)``: one row per update with the ``reinforce/...`` metrics of :func:`update`,
    ``rollout/...`` and ``time/...``, and one row per finished episode.
    """
    run = start_training(config, env, seed)
    optimizer = adam(run.agent.policy_parameters(), config.learning_rate, config.adam_eps)
    value_optimizer = adam(run.agent.value_parameters(), config.vf_learning_rate, config.adam_eps)
    step = partial(update, run.agent, optimizer, config=config, value_optimizer=value_optimizer)
    return run_training(run, config, step, "reinforce", progress, stop_at_return)
