"""Advantage actor-critic (A2C): the synchronous variant of A3C (Mnih et al. 2016), with GAE.

Chapter 2, value functions and GAE.  Every ``num_steps`` steps of ``num_envs`` environments the
actor takes ONE gradient step on the policy-gradient loss weighted by GAE advantages, and the
critic one step on the value loss, together:

.. math:: L(\\theta) = -\\hat{\\mathbb E}_t[\\log\\pi_\\theta(a_t|s_t)\\hat A_t]
          + c_1 \\hat{\\mathbb E}_t[\\tfrac12 (V_\\theta(s_t) - \\hat R_t)^2]
          - c_2 \\hat{\\mathbb E}_t[S[\\pi_\\theta](s_t)]

(Mnih et al. 2016, Algorithm S3, with the n-step advantage replaced by GAE, Schulman et al.
2016).  It is PPO with one epoch, one minibatch and no ratio: the step that PPO's clipping makes
safe to repeat.

Order of the file: config, objective, estimator, update step, training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from minippo.advantages import advantages_and_returns, whiten
from minippo.history import History
from minippo.nets import ActorCritic
from minippo.objectives import entropy_bonus, policy_gradient_loss, value_loss
from minippo.optim import adam, optimizer_step
from minippo.rollout import Rollout
from minippo.training import TrainingConfig, policy_diagnostics, run_training, start_training
from minippo.utils import check_finite, check_range

__all__ = ["A2CConfig", "a2c_loss", "update", "train"]


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class A2CConfig(TrainingConfig):
    """A2C on CartPole-v1 (Adam instead of the paper's shared RMSProp; sizes tuned for CartPole)."""

    num_envs: int = 32  #: parallel environments B (paper: 16 actor-learners)
    num_steps: int = 16  #: steps per environment per update T (paper: t_max = 5; SB3: 5)
    total_steps: int = 300_000  #: environment steps in the whole run
    gamma: float = 0.99  #: discount (paper: 0.99)
    gae_lambda: float = 0.95  #: GAE lambda (GAE paper: 0.92-0.99; 1.0 is the paper's n-step return)
    learning_rate: float = 3e-3  #: Adam learning rate (tuned on seeds 0-2; SB3's RMSProp: 7e-4)
    vf_coef: float = 0.5  #: c1, value-loss weight (SB3: 0.5)
    ent_coef: float = 0.0  #: c2, entropy bonus (paper: 0.01; RL-Zoo CartPole: 0.0)
    max_grad_norm: float | None = 0.5  #: global gradient-norm clip (SB3: 0.5); None = off
    norm_adv: bool = True  #: whiten advantages (SB3's default is False; helps here)

    def __post_init__(self):
        super().__post_init__()
        check_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_range("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_range("vf_coef", self.vf_coef, 0.0)
        check_range("ent_coef", self.ent_coef, 0.0)
        if self.max_grad_norm is not None:
            check_range("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)


# --------------------------------------------------------------------------- objective
def a2c_loss(agent: ActorCritic, obs: Tensor, actions: Tensor, adv: Tensor, ret: Tensor,
             config: A2CConfig) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The A2C loss :math:`-\hat{\mathbb E}[\log\pi\,\hat A] + c_1 L^{VF} - c_2 S`.

    Source: Mnih et al. (2016), Algorithm S3 (the gradients it accumulates, written as one loss).
    Chapter 2, value functions and GAE.
    """
    logp, entropy, v = agent.evaluate(obs, actions)  # (N,), (N,), (N,)
    pg_loss = policy_gradient_loss(logp, adv)
    v_loss = value_loss(v, ret)
    ent = entropy_bonus(entropy)
    loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * ent
    return loss, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": ent}


# --------------------------------------------------------------------------- update step
def update(agent: ActorCritic, optimizer: torch.optim.Optimizer, rollout: Rollout,
           config: A2CConfig, *, update_index: int = 1) -> dict[str, float]:
    """GAE advantages (estimator), then one gradient step on :func:`a2c_loss`.  Returns the
    ``a2c/...`` metrics (the metric dictionary's set under A2C's own prefix)."""
    adv, ret = advantages_and_returns(rollout, config.gamma, config.gae_lambda)
    adv, ret = adv.flatten(), ret.flatten()  # (N,), (N,) ret: lambda-returns, value targets
    if config.norm_adv:
        adv = whiten(adv)  # (N,)
    batch = rollout.flatten()
    loss, parts = a2c_loss(agent, batch["obs"], batch["actions"], adv, ret, config)
    check_finite(update_index, policy_loss=parts["policy_loss"],
                 value_loss=parts["value_loss"])
    optimizer_step(list(agent.parameters()), optimizer, loss, config.max_grad_norm,
                   foreach=True)

    metrics = policy_diagnostics(agent, batch, ret, "a2c")
    metrics.update({
        "a2c/policy_loss": parts["policy_loss"].item(),
        "a2c/value_loss": parts["value_loss"].item(),
        "a2c/mean_advantage": float(adv.mean()),
    })
    return metrics


# --------------------------------------------------------------------------- training loop
def train(config: A2CConfig = A2CConfig(), env=None, *, seed: int = 0, progress: bool = True,
          stop_at_return: float | None = None) -> tuple[ActorCritic, History]:
    """Train A2C; ``env=None`` is ``CartPole(config.num_envs, seed=seed)``.

    One Adam over actor and critic at ``learning_rate``.

    :func:`minippo.training.run_training` alternates rollouts of ``config.batch_size`` steps and
    :func:`update` until ``config.total_steps`` environment steps, or until the mean of the last
    ``EPISODE_WINDOW`` (20) finished episodes reaches ``stop_at_return``.  Returns
    ``(agent, history)``: one row per update with the ``a2c/...`` metrics of :func:`update`,
    ``rollout/...`` and ``time/...``, and one row per finished episode.
    """
    run = start_training(config, env, seed)
    optimizer = adam(run.agent.parameters(), config.learning_rate, config.adam_eps)
    step = partial(update, run.agent, optimizer, config=config)
    return run_training(run, config, step, "a2c", progress, stop_at_return)
