"""Proximal Policy Optimization with the clipped objective (Schulman et al. 2017).

Chapters 4 (the clipped objective) and 5 (PPO in practice: every switch below is one of the
ablations).  Each update collects T steps of B environments, computes GAE advantages, and takes
a few epochs of minibatch Adam steps on

.. math:: L(\\theta) = -L^{CLIP}(\\theta) + c_1 L^{VF}(\\theta) - c_2 S[\\pi_\\theta]

(PPO paper, eq. 9).  The clipped surrogate, value losses and entropy bonus live in
:mod:`minippo.objectives`, GAE in :mod:`minippo.advantages`; this file only wires them.

Order of the file: config, objective (the combined loss), update step (with GAE, the
estimator, from :mod:`minippo.advantages`), training loop (:mod:`minippo.training`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from minippo import schedules
from minippo.advantages import advantages_and_returns, whiten
from minippo.history import History
from minippo.nets import ActorCritic
from minippo.objectives import (DIAGNOSTIC_CLIP_EPS, TARGET_KL_FACTOR, clipped_surrogate,
                                clipped_value_loss, entropy_bonus, kl_k3, value_loss)
from minippo.optim import adam, optimizer_step, set_learning_rate
from minippo.rollout import Rollout
from minippo.training import TrainingConfig, policy_diagnostics, run_training, start_training
from minippo.utils import check_finite, check_range

__all__ = ["PPOConfig", "ppo_loss", "update", "learning_rate", "train", "CANONICAL_CARTPOLE",
           "PENDULUM"]

LEARNING_RATE_SCHEDULES = ("constant", "linear", "warmup_cosine")


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class PPOConfig(TrainingConfig):
    """PPO on CartPole-v1: the book's defaults, tuned for wall-clock time to a return of 475.

    Values from the PPO paper (Schulman et al. 2017, Table 3, Mujoco) and the reference
    implementations where they worked; the batch shape, the learning rate and the KL early stop
    were tuned for time to the threshold (``benchmarks/README.md``): a few large steps per
    update, kept safe by clipping and ``target_kl``, beat many small ones on a CPU.
    """

    num_envs: int = 16  #: parallel environments B (tuned; the batched CartPole steps them at once)
    num_steps: int = 32  #: steps per environment per update T (RL-Zoo CartPole: 32; batch 512)
    total_steps: int = 100_000  #: environment steps; the learning rate anneals over them (RL-Zoo: 1e5)
    gamma: float = 0.995  #: discount (tuned; paper: 0.99, with which 1 of 10 seeds got stuck)
    gae_lambda: float = 0.95  #: GAE lambda (paper, Table 3)
    learning_rate: float = 1e-2  #: Adam learning rate at the start of the schedule (tuned; paper: 3e-4)
    learning_rate_schedule: str = "linear"  #: "constant", "linear" (to 0, paper Table 5) or "warmup_cosine"
    warmup_fraction: float = 0.05  #: share of updates spent warming up ("warmup_cosine" only)
    update_epochs: int = 4  #: passes over the batch per update K (CleanRL: 4; paper: 10)
    num_minibatches: int = 1  #: minibatches per epoch (tuned: the whole batch of 512)
    clip_eps: float | None = 0.2  #: clipping epsilon (paper: 0.2); None = unclipped surrogate
    clip_value: bool = False  #: PPO2 value clipping at clip_eps (Engstrom et al. 2020: no gain)
    vf_coef: float = 0.5  #: c1, value-loss weight (CleanRL: 0.5 with the 1/2 in the loss)
    ent_coef: float = 0.0  #: c2, entropy bonus (paper Mujoco and RL-Zoo CartPole: 0)
    max_grad_norm: float | None = 0.5  #: global gradient-norm clip (CleanRL: 0.5); None = off
    norm_adv: bool = True  #: whiten advantages per minibatch (Baselines, CleanRL)
    target_kl: float | None = 0.01  #: stop epochs at KL > 1.5 target (Spinning Up: 0.01); None off
    adam_eps: float = 1e-5  #: Adam epsilon (Baselines, CleanRL: 1e-5)

    def __post_init__(self):
        super().__post_init__()
        check_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_range("learning_rate", self.learning_rate, 0.0, low_open=True)
        if self.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
            raise ValueError(f"learning_rate_schedule must be one of {LEARNING_RATE_SCHEDULES}, "
                             f"got {self.learning_rate_schedule!r}")
        check_range("warmup_fraction", self.warmup_fraction, 0.0, 1.0, high_open=True)
        check_range("update_epochs", self.update_epochs, 1)
        check_range("num_minibatches", self.num_minibatches, 1, self.batch_size // 2)
        if self.clip_eps is not None and not math.isinf(self.clip_eps):
            check_range("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True)
        if self.clip_value and (self.clip_eps is None or math.isinf(self.clip_eps)):
            raise ValueError("clip_value=True clips the value at clip_eps, so clip_eps must be in "
                             f"(0, 1], got {self.clip_eps!r}")
        check_range("vf_coef", self.vf_coef, 0.0)
        check_range("ent_coef", self.ent_coef, 0.0)
        if self.max_grad_norm is not None:
            check_range("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        if self.target_kl is not None:
            check_range("target_kl", self.target_kl, 0.0, low_open=True)

    @property
    def minibatch_size(self) -> int:
        """Samples per gradient step, ``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches


# --------------------------------------------------------------------------- objective
def ppo_loss(agent: ActorCritic, obs: Tensor, actions: Tensor, logp_old: Tensor, adv: Tensor,
             ret: Tensor, v_old: Tensor, config: PPOConfig) -> tuple[Tensor, dict[str, Tensor]]:
    r"""PPO's combined loss on one minibatch, :math:`-L^{CLIP} + c_1 L^{VF} - c_2 S`.

    With ``config.norm_adv`` the minibatch's advantages are whitened first.
    Source: PPO paper (Schulman et al. 2017), eq. 9.  Chapter 4, PPO's clipped objective.
    Returns the loss and its parts ``policy_loss``, ``value_loss``, ``entropy`` (for logging).
    """
    logp, entropy, v = agent.evaluate(obs, actions)  # (M,), (M,), (M,)
    if config.norm_adv:
        adv = whiten(adv)  # (M,) per minibatch, as Baselines/CleanRL
    pg_loss = clipped_surrogate(logp, logp_old, adv, config.clip_eps)
    if config.clip_value:
        v_loss = clipped_value_loss(v, v_old, ret, config.clip_eps)
    else:
        v_loss = value_loss(v, ret)
    ent = entropy_bonus(entropy)
    loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * ent
    return loss, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": ent, "logp": logp}


# --------------------------------------------------------------------------- update step
def learning_rate(config: PPOConfig, update_index: int) -> float:
    """The learning rate of update ``update_index`` (0-based) under ``config.learning_rate_schedule``."""
    total = config.iterations
    if config.learning_rate_schedule == "linear":
        return schedules.linear_anneal(update_index, total, config.learning_rate)
    if config.learning_rate_schedule == "warmup_cosine":
        warmup = min(int(config.warmup_fraction * total), total - 1)
        return schedules.warmup_cosine(update_index, total, config.learning_rate, warmup)
    return schedules.constant(update_index, total, config.learning_rate)


def update(agent: ActorCritic, optimizer: torch.optim.Optimizer, rollout: Rollout,
           config: PPOConfig, *, update_index: int = 1) -> dict[str, float]:
    """Update ``update_index`` of the run (from 1): set the learning rate the schedule gives it,
    compute GAE (estimator), then ``update_epochs`` passes of ``num_minibatches`` Adam steps on
    :func:`ppo_loss`.

    With ``target_kl`` set, the epochs stop before a minibatch step whose k3 estimate of
    KL(old || new) on that minibatch, measured before the step, exceeds
    ``TARGET_KL_FACTOR * target_kl`` = 1.5 target_kl (Spinning Up, Stable-Baselines3; the same
    rule as :func:`minippo.lm.rlhf.update`; Chapter 5).  Returns the metric dictionary's metrics,
    measured after the update on the whole rollout (:func:`minippo.training.policy_diagnostics`),
    the means over the gradient steps of the losses and of the gradient norm before clipping,
    ``ppo/learning_rate``, ``ppo/num_gradient_steps``, ``ppo/epochs`` (started) and
    ``ppo/early_stopped``.
    """
    set_learning_rate(optimizer, learning_rate(config, update_index - 1))  # the LR schedule
    adv, ret = advantages_and_returns(rollout, config.gamma, config.gae_lambda)
    batch = rollout.flatten()
    obs, actions, logp_old, v_old = batch["obs"], batch["actions"], batch["logp"], batch["values"]
    adv, ret = adv.flatten(), ret.flatten()  # (N,), (N,)
    n, mb = adv.shape[0], config.minibatch_size
    params = list(agent.parameters())
    sums = {"policy_loss": 0.0, "value_loss": 0.0, "grad_norm": 0.0}
    steps, epochs, stop = 0, 0, False
    for _ in range(config.update_epochs):
        epochs += 1
        perm = torch.randperm(n) if config.num_minibatches > 1 else None  # one minibatch: all
        for start in range(0, mb * config.num_minibatches, mb):
            idx = slice(None) if perm is None else perm[start:start + mb]  # (M,)
            loss, parts = ppo_loss(agent, obs[idx], actions[idx], logp_old[idx], adv[idx],
                                   ret[idx], v_old[idx], config)
            if config.target_kl is not None:
                kl = float(kl_k3(logp_old[idx], parts["logp"].detach()).mean())
                if kl > TARGET_KL_FACTOR * config.target_kl:  # checked before the step
                    stop = True
                    break
            check_finite(update_index, policy_loss=parts["policy_loss"],
                         value_loss=parts["value_loss"])
            grad_norm = optimizer_step(params, optimizer, loss, config.max_grad_norm, foreach=True)
            sums["policy_loss"] += parts["policy_loss"].item()
            sums["value_loss"] += parts["value_loss"].item()
            sums["grad_norm"] += float(grad_norm)
            steps += 1
        if stop:
            break

    clip_eps = config.clip_eps
    if clip_eps is None or math.isinf(clip_eps):
        clip_eps = DIAGNOSTIC_CLIP_EPS  # unclipped: how often it *would* have clipped
    metrics = policy_diagnostics(agent, batch, ret, "ppo", clip_eps)
    metrics.update({f"ppo/{name}": total / steps if steps else math.nan
                    for name, total in sums.items()})
    metrics.update({
        "ppo/mean_advantage": float(adv.mean()),
        "ppo/learning_rate": optimizer.param_groups[0]["lr"],
        "ppo/num_gradient_steps": float(steps),
        "ppo/epochs": epochs,
        "ppo/early_stopped": float(stop),
    })
    return metrics


# --------------------------------------------------------------------------- training loop
def train(config: PPOConfig = PPOConfig(), env=None, *, seed: int = 0, progress: bool = True,
          stop_at_return: float | None = None) -> tuple[ActorCritic, History]:
    """Train PPO; ``env=None`` is ``CartPole(config.num_envs, seed=seed)``.

    One Adam over actor and critic (``learning_rate``, ``adam_eps``); :func:`update` sets each
    update's learning rate from ``learning_rate_schedule``.

    :func:`minippo.training.run_training` alternates rollouts of ``config.batch_size`` steps and
    :func:`update` until ``config.total_steps`` environment steps, or until the mean of the last
    ``EPISODE_WINDOW`` (20) finished episodes reaches ``stop_at_return``.  Returns
    ``(agent, history)``: one row per update with the ``ppo/...`` metrics of :func:`update`,
    ``rollout/...`` and ``time/...``, and one row per finished episode.
    """
    run = start_training(config, env, seed)
    optimizer = adam(run.agent.parameters(), config.learning_rate, config.adam_eps)
    step = partial(update, run.agent, optimizer, config=config)
    return run_training(run, config, step, "ppo", progress, stop_at_return)


# --------------------------------------------------------------------------- other configurations
#: The canonical settings for CartPole: CleanRL's ``ppo.py`` defaults (Huang et al. 2022, "The 37
#: implementation details of PPO"; the PPO paper's Atari column with 4 envs), except the run
#: length, which is the book's: 4 envs x 128 steps, 4 minibatches of 128, 4 epochs, Adam 2.5e-4
#: annealed to 0, gamma 0.99, lambda 0.95, clip 0.2 (value clipped too), entropy 0.01,
#: c1 0.5, gradient norm 0.5, no KL stop.  Chapter 4 runs it beside :class:`PPOConfig`.
CANONICAL_CARTPOLE = PPOConfig(
    num_envs=4, num_steps=128, gamma=0.99, gae_lambda=0.95, learning_rate=2.5e-4,
    learning_rate_schedule="linear", update_epochs=4, num_minibatches=4, clip_eps=0.2,
    clip_value=True, vf_coef=0.5, ent_coef=0.01, max_grad_norm=0.5, norm_adv=True,
    target_kl=None, adam_eps=1e-5)

#: PPO on :class:`minippo.envs.Pendulum` with a Gaussian policy (Chapter 4, "Continuous
#: actions"), sized for the chapter's time budget: 16 envs x 64 steps, 10 epochs of 2
#: minibatches (PPO paper, Mujoco: 10 epochs), gamma 0.95 (Pendulum's horizon is short; RL-Zoo
#: uses 0.9), Adam 3e-3 annealed, no entropy bonus, no KL stop.  Measured in Chapter 4 with and
#: without :mod:`minippo.normalize`'s observation and reward normalisation.
PENDULUM = PPOConfig(
    num_envs=16, num_steps=64, total_steps=50_000, gamma=0.95, gae_lambda=0.95,
    learning_rate=3e-3, learning_rate_schedule="linear", update_epochs=10, num_minibatches=2,
    ent_coef=0.0, target_kl=None)
