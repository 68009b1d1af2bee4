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

The training loop that calls :func:`collect` is :mod:`minippo.training`; what ``collect`` asks
of the agent (``sample`` and ``value``) is :class:`minippo.nets.Agent`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from minippo.history import History
from minippo.nets import Agent

__all__ = ["Rollout", "collect"]


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
def collect(env, agent: Agent, obs: Tensor, num_steps: int, history: History | None = None,
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
        t_end, b_end = (terminated | truncated).nonzero(as_tuple=True)  # (Ep,), (Ep,) time-sorted
        for t, ret, length in zip(t_end.tolist(), ep_return[t_end, b_end].tolist(),
                                  ep_length[t_end, b_end].tolist()):
            history.log_episodes(global_step + (t + 1) * B, step_times[t] - start_time,
                                 [ret], [length])

    rollout = Rollout(obs_buf[:T], actions, logp, values, rewards, terminated, truncated,
                      next_values)
    return rollout, obs

