"""Time-major rollout storage and collection, with the truncation bootstrap.

A rollout is ``num_steps`` (T) steps of ``num_envs`` (B) environments, stored as (T, B, ...)
tensors.  The one subtle quantity is ``next_values``, the value of the state that follows step
``t`` *in the same episode*:

* not done: the next stored state, ``values[t + 1]`` (at ``t = T - 1``: V of the observation the
  next rollout starts from);
* truncated (time limit): the episode did not end, the clock did; the next state is
  ``final_obs`` and we bootstrap from V(final_obs) (Pardo et al. 2018, "Time limits in RL");
* terminated (the pole fell): no next state, so 0.

Merging the two (CleanRL's ``logical_or``, SB3 issue 633) teaches the agent that reaching the time
limit is a disaster.  Chapter 2, value functions and GAE.

The file also holds the training-loop plumbing that REINFORCE, A2C, TRPO and PPO share: the
loop itself (:func:`run_training`: collect a rollout, update, log, stop), the diagnostics every
update reports and the row each update appends to the history.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import Tensor
from tqdm import tqdm  # text bar: tqdm.auto needs ipywidgets and warns without it

from minippo.envs import CartPole
from minippo.history import History
from minippo.nets import ActorCritic
from minippo.objectives import clip_fraction, explained_variance, kl_k3, value_loss
from minippo.utils import check_finite, check_range, set_seed

__all__ = ["RolloutConfig", "Rollout", "collect", "policy_diagnostics", "fit_value",
           "start_training", "run_training", "record_update", "return_reached"]


class RolloutConfig:
    """What the four algorithm configs share: derived sizes and the checks of the common fields.

    A mixin without fields: each ``@dataclass(frozen=True)`` config declares ``num_envs``,
    ``num_steps``, ``total_steps``, ``gamma`` and ``hidden_sizes`` itself, with its own defaults
    and their sources, and calls :meth:`check_rollout_fields` from ``__post_init__``.
    """

    @property
    def batch_size(self) -> int:
        """Samples per update, ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        """Updates in the run, ``total_steps // batch_size``."""
        return self.total_steps // self.batch_size

    def check_rollout_fields(self) -> None:
        check_range("num_envs", self.num_envs, 1)
        check_range("num_steps", self.num_steps, 1)
        check_range("total_steps", self.total_steps, self.batch_size)
        check_range("gamma", self.gamma, 0.0, 1.0)
        hidden = self.hidden_sizes
        if len(hidden) == 0 or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden_sizes must be a non-empty sequence of positive ints, "
                             f"got {hidden!r}")


@dataclass
class Rollout:
    """T steps of B environments, time-major."""

    obs: Tensor          #: (T, B, O) observation the action was taken in
    actions: Tensor      #: (T, B) long (discrete) or (T, B, A) float (continuous)
    logp: Tensor         #: (T, B) log pi_old(a_t | s_t) at collection time
    values: Tensor       #: (T, B) V_old(s_t) at collection time
    rewards: Tensor      #: (T, B)
    terminated: Tensor   #: (T, B) bool, a real end: no bootstrap
    truncated: Tensor    #: (T, B) bool, a time-limit cut: bootstrap from V(final_obs)
    next_values: Tensor  #: (T, B) V of the next state in the same episode (see module docstring)

    @property
    def num_steps(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_envs(self) -> int:
        return self.rewards.shape[1]

    def flatten(self) -> dict[str, Tensor]:
        """Every field reshaped from (T, B, ...) to (T*B, ...), keyed by field name."""
        return {f.name: getattr(self, f.name).flatten(0, 1) for f in fields(self)}


@torch.no_grad()
def collect(env, agent, obs: Tensor, num_steps: int, history: History | None = None,
            global_step: int = 0, start_time: float | None = None) -> tuple[Rollout, Tensor]:
    """Run ``agent`` in ``env`` for ``num_steps`` steps from observation ``obs`` (B, O).

    Returns the :class:`Rollout` and the observation the next rollout starts from.  Finished
    episodes are appended to ``history`` (if given) with the global step at which they ended
    (``global_step`` counts environment steps before this rollout) and the seconds since
    ``start_time`` (a ``time.perf_counter()`` value; default: the start of this call).

    Speed: storage is preallocated, nothing leaves torch inside the loop, and the loop runs
    only the policy (``agent.sample``) and the batched environment step; the values of all
    T x B states are computed afterwards in one batched forward pass.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    T, (B, O) = num_steps, obs.shape
    if start_time is None:
        start_time = time.perf_counter()
    obs_buf = torch.empty((T + 1, B, O), dtype=obs.dtype)  # (T+1, B, O): + the next start
    final_obs = torch.empty((T, B, O), dtype=obs.dtype)  # (T, B, O)
    logp = torch.empty((T, B))  # (T, B)
    rewards = torch.empty((T, B))  # (T, B)
    terminated = torch.empty((T, B), dtype=torch.bool)  # (T, B)
    truncated = torch.empty((T, B), dtype=torch.bool)  # (T, B)
    ep_return = torch.empty((T, B))  # (T, B)
    ep_length = torch.empty((T, B), dtype=torch.long)  # (T, B)
    actions = None
    step_times = []
    for t in range(T):
        obs_buf[t] = obs
        action, logp[t] = agent.sample(obs)  # (B,) or (B, A); (B,)
        if actions is None:
            actions = torch.empty((T, *action.shape), dtype=action.dtype)  # (T, B) or (T, B, A)
        actions[t] = action
        step = env.step(action)
        rewards[t] = step.reward
        terminated[t] = step.terminated
        truncated[t] = step.truncated
        final_obs[t] = step.final_obs
        ep_return[t] = step.episode_return
        ep_length[t] = step.episode_length
        obs = step.obs
        step_times.append(time.perf_counter())
    obs_buf[T] = obs

    # V of every visited state and of the next start, in one batched pass (not once per step).
    v_all = agent.value(obs_buf.flatten(0, 1)).view(T + 1, B)  # (T+1, B)
    values = v_all[:T]  # (T, B)
    # next_values: V(s_{t+1}) in the same episode (module docstring).
    next_values = v_all[1:].clone()  # (T, B): values[t+1], and V(next start) at t = T-1
    if truncated.any():
        next_values[truncated] = agent.value(final_obs[truncated])
    next_values[terminated] = 0.0

    if history is not None:
        t_end, b_end = (terminated | truncated).nonzero(as_tuple=True)  # (E,), (E,) time-sorted
        for t, ret, length in zip(t_end.tolist(), ep_return[t_end, b_end].tolist(),
                                  ep_length[t_end, b_end].tolist()):
            history.log_episodes(global_step + (t + 1) * B, step_times[t] - start_time,
                                 [ret], [length])

    rollout = Rollout(obs_buf[:T], actions, logp, values, rewards, terminated, truncated,
                      next_values)
    return rollout, obs


@torch.no_grad()
def policy_diagnostics(agent, obs: Tensor, actions: Tensor, logp_old: Tensor, values: Tensor,
                       returns: Tensor, clip_eps: float = 0.2) -> dict[str, float]:
    """What changed in one update, measured afterwards on the rollout's own samples.

    ``ppo/kl_divergence`` is the k3 estimate of KL(pi_old || pi_new) on the rollout's states and
    actions (actions were drawn from pi_old, as k3 requires); ``ppo/clip_fraction`` is the share
    of samples whose ratio pi_new/pi_old left [1 - eps, 1 + eps] (for REINFORCE, A2C and TRPO a
    diagnostic at eps = 0.2); ``ppo/explained_variance`` compares the old values with the
    returns they were trained towards.  Inputs are flat (N, ...) tensors.
    """
    logp, entropy = agent.policy_terms(obs, actions)  # (N,), (N,)
    ratio = (logp - logp_old).exp()  # (N,)
    return {
        "ppo/kl_divergence": float(kl_k3(logp_old, logp).mean()),
        "ppo/clip_fraction": float(clip_fraction(ratio, clip_eps)),
        "ppo/ratio_mean": float(ratio.mean()),
        "ppo/ratio_std": float(ratio.std()),
        "ppo/entropy": float(entropy.mean()),
        "ppo/explained_variance": float(explained_variance(values, returns)),
        "ppo/value_pred_mean": float(values.mean()),
    }


def fit_value(agent, optimizer: torch.optim.Optimizer, obs: Tensor, ret: Tensor, epochs: int,
              minibatches: int, update_index: int = 0) -> float:
    """Regress V on its targets: ``epochs`` passes of ``minibatches`` Adam steps on
    ``0.5 (V(s) - R)^2`` (:func:`minippo.objectives.value_loss`).  TRPO and REINFORCE's baseline
    fit their critic this way, apart from the policy step (GAE paper, Section 5; Spinning Up's
    ``train_v_iters``).  ``obs`` (N, O), ``ret`` (N,).  Returns the mean loss (NaN if no step)."""
    n = ret.shape[0]
    mb = n // minibatches
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(n)
        for start in range(0, mb * minibatches, mb):
            idx = perm[start:start + mb]  # (M,)
            loss = value_loss(agent.value(obs[idx]), ret[idx])
            check_finite(update_index, value_loss=loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return sum(losses) / len(losses) if losses else math.nan


def record_update(history: History, metrics: dict, rollout: Rollout, start_time: float,
                  stop_at_return: float | None = None) -> bool:
    """Append one update's row (step, time, recent episodes, reward statistics and ``metrics``)
    and say whether training should stop: the mean of 20 consecutive finished episodes, the
    last of them from this rollout, reached ``stop_at_return`` (``None``: never stop)."""
    prev_step = history["global_step"][-1] if len(history) else 0
    prev_time = history["time/elapsed"][-1] if len(history) else 0.0
    elapsed = time.perf_counter() - start_time
    lengths = history.episodes["length"][-20:]
    row = {
        "global_step": prev_step + rollout.rewards.numel(),
        "time/elapsed": elapsed,
        "rollout/episodic_return": history.recent_return(20),
        "rollout/episode_length": sum(lengths) / len(lengths) if lengths else math.nan,
        "ppo/mean_reward": float(rollout.rewards.mean()),
        "ppo/reward_std": float(rollout.rewards.std()),
        **metrics,
        "time/steps_per_second": rollout.rewards.numel() / max(elapsed - prev_time, 1e-9),
    }
    history.log_update(row)
    if stop_at_return is None:
        return False
    steps = history.episodes["global_step"]
    new = len(steps)
    while new > 0 and steps[new - 1] > prev_step:  # episodes that ended in this rollout
        new -= 1
    return return_reached(history, stop_at_return, since=new)


def return_reached(history: History, threshold: float, since: int = 0, window: int = 20) -> bool:
    """Whether the mean of ``window`` consecutive finished episodes, the last of them logged at
    index ``since`` or later, reached ``threshold``: :meth:`History.solved_at`'s test, checked
    only for the episodes of the latest rollout so that a training loop can ask every update."""
    r = history.episodes["return"]
    return any(sum(r[i - window + 1:i + 1]) >= threshold * window
               for i in range(max(since, window - 1), len(r)))


def start_training(config, env=None, seed: int = 0) -> tuple[object, Tensor, ActorCritic, History]:
    """Seed everything, make the environment (``CartPole(config.num_envs, seed=seed)`` when
    ``env`` is None), reset it, and build the network from ``config.hidden_sizes`` and
    ``config.orthogonal_init``.  Returns ``(env, obs, agent, history)``."""
    set_seed(seed)
    if env is None:
        env = CartPole(config.num_envs, seed=seed)
    obs = env.reset(seed=seed)  # (B, O)
    agent = ActorCritic.from_env(env, hidden=tuple(config.hidden_sizes),
                                 orthogonal_init=config.orthogonal_init)
    return env, obs, agent, History(config=config)


def run_training(config, env, seed: int, name: str, make_update: Callable, progress: bool = True,
                 stop_at_return: float | None = None) -> tuple[ActorCritic, History]:
    """The training loop of REINFORCE, A2C, TRPO and PPO: ``config.num_updates`` times, collect
    ``config.num_steps`` steps from every environment, update, log the update's row, and stop
    early once the mean of 20 finished episodes reaches ``stop_at_return``.

    ``make_update(agent)`` builds the algorithm's optimizers for the new network and returns
    ``update(rollout, i) -> metrics`` for update ``i`` (1-based).  ``name`` labels the progress
    bar.  Returns ``(agent, history)``.
    """
    start = time.perf_counter()  # the clock includes building the env and the network
    env, obs, agent, history = start_training(config, env, seed)
    update = make_update(agent)
    for i in tqdm(range(1, config.num_updates + 1), desc=name, disable=not progress):
        rollout, obs = collect(env, agent, obs, config.num_steps, history,
                               (i - 1) * config.batch_size, start)
        metrics = update(rollout, i)
        if record_update(history, metrics, rollout, start, stop_at_return):
            break
    return agent, history
