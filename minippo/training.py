"""The training loop of REINFORCE, A2C, TRPO and PPO, and the row it records for each update.

Every CartPole trainer has the same shape::

    def train(config, env=None, *, seed=0, progress=True, stop_at_return=None):
        run = start_training(config, env, seed)                 # seed, env, network, history
        optimizer = adam(run.agent.parameters(), config.learning_rate)  # its own optimizers
        step = partial(update, run.agent, optimizer, config=config)      # a plain function
        return run_training(run, config, step, "ppo", progress, stop_at_return)

:func:`run_training` repeats, ``config.iterations`` times: collect ``num_steps`` steps of every
environment (:func:`minippo.rollout.collect`), call ``step(rollout, update_index=i)``, append
the update's row to the history (:func:`record_update`), and stop early once the mean of the
last :data:`~minippo.history.EPISODE_WINDOW` finished episodes reaches ``stop_at_return``.
The algorithm lives in its ``update``; this file is the same for all four.

:class:`TrainingConfig` declares the fields the four configs share (rollout shape, budget,
discount, network) and checks them; each algorithm's config subclasses it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm import tqdm  # text bar: tqdm.auto needs ipywidgets and warns without it

from minippo.envs import CartPole
from minippo.history import EPISODE_WINDOW, History, prefixed
from minippo.nets import ActorCritic
from minippo.objectives import DIAGNOSTIC_CLIP_EPS, update_diagnostics
from minippo.rollout import Rollout, collect
from minippo.utils import check_finite, check_range, check_types, set_seed

__all__ = ["TrainingConfig", "Run", "start_training", "run_training", "record_update",
           "return_reached", "policy_diagnostics"]


@dataclass(frozen=True)
class TrainingConfig:
    """The fields REINFORCE, A2C, TRPO and PPO share, their checks and the sizes derived from them.

    Each algorithm's config (``PPOConfig``, ...) subclasses it and redeclares a field to give it
    its own default and source.  ``__post_init__`` checks every field's type
    (:func:`minippo.utils.check_types`), then these ranges; a subclass adds its own checks.
    """

    num_envs: int = 16  #: parallel environments B
    num_steps: int = 128  #: steps per environment per iteration T
    total_steps: int = 100_000  #: environment steps in the whole run
    gamma: float = 0.99  #: discount
    hidden_sizes: Sequence[int] = (64, 64)  #: hidden widths of actor and critic (PPO paper: 64, 64)
    orthogonal_init: bool = True  #: orthogonal initialisation (nets.layer_init; OpenAI Baselines)
    adam_eps: float = 1e-8  #: Adam's epsilon (Kingma & Ba, torch's default; PPO: 1e-5)

    def __post_init__(self):
        check_types(self)
        check_range("num_envs", self.num_envs, 1)
        check_range("num_steps", self.num_steps, 1)
        check_range("total_steps", self.total_steps, self.batch_size)
        check_range("gamma", self.gamma, 0.0, 1.0)
        check_range("adam_eps", self.adam_eps, 0.0, low_open=True)
        if len(self.hidden_sizes) == 0 or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be a non-empty sequence of positive ints, "
                             f"got {self.hidden_sizes!r}")

    @property
    def batch_size(self) -> int:
        """Samples per iteration, ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def iterations(self) -> int:
        """Iterations in the run (each: one rollout, one update), ``total_steps // batch_size``;
        the language-model configs set theirs directly."""
        return self.total_steps // self.batch_size


@dataclass
class Run:
    """A training run in progress: what :func:`run_training` carries from one update to the next."""

    env: object  #: the (batched) environment
    obs: Tensor  #: (B, O) the observation the next rollout starts from
    agent: ActorCritic  #: the network being trained
    history: History  #: the record, one row per update and one per finished episode
    start_time: float  #: ``time.perf_counter()`` when the run started


def start_training(config: TrainingConfig, env=None, seed: int = 0) -> Run:
    """Start the clock, seed everything, make the environment (``CartPole(config.num_envs,
    seed=seed)`` when ``env`` is None), reset it, and build the network from
    ``config.hidden_sizes`` and ``config.orthogonal_init``."""
    start_time = time.perf_counter()  # the clock includes building the env and the network
    set_seed(seed)
    if env is None:
        env = CartPole(config.num_envs, seed=seed)
    obs = env.reset(seed=seed)  # (B, O)
    agent = ActorCritic.from_env(env, hidden=tuple(config.hidden_sizes),
                                 orthogonal_init=config.orthogonal_init)
    return Run(env, obs, agent, History(config=config), start_time)


def run_training(run: Run, config: TrainingConfig, update: Callable[..., dict], prefix: str,
                 progress: bool = True,
                 stop_at_return: float | None = None) -> tuple[ActorCritic, History]:
    """The training loop: ``config.iterations`` times, collect ``config.num_steps`` steps from
    every environment, ``metrics = update(rollout, update_index=i)`` (``i`` from 1), log the
    update's row (:func:`record_update`), and stop early once the mean of the last
    ``EPISODE_WINDOW`` finished episodes reaches ``stop_at_return``.

    ``prefix`` names the algorithm: it labels the progress bar and the row's reward statistics
    (``<prefix>/mean_reward``).  A NaN or inf reward stops training with the update number.
    Returns ``(agent, history)``.
    """
    for i in tqdm(range(1, config.iterations + 1), desc=prefix, disable=not progress):
        rollout, run.obs = collect(run.env, run.agent, run.obs, config.num_steps, run.history,
                                   (i - 1) * config.batch_size, run.start_time)
        check_finite(i, rewards=rollout.rewards)
        metrics = update(rollout, update_index=i)
        if record_update(run.history, metrics, rollout, run.start_time, prefix, stop_at_return):
            break
    return run.agent, run.history


@torch.no_grad()
def policy_diagnostics(agent, batch: dict[str, Tensor], returns: Tensor, prefix: str,
                       clip_eps: float = DIAGNOSTIC_CLIP_EPS) -> dict[str, float]:
    """:func:`minippo.objectives.update_diagnostics` of ``agent`` after its update, on the
    rollout's own samples (``batch`` is :meth:`Rollout.flatten`, ``returns`` (N,) the value
    targets), named ``<prefix>/kl_divergence``, ``<prefix>/clip_fraction``, ...  REINFORCE, A2C
    and TRPO report the clip fraction at ``DIAGNOSTIC_CLIP_EPS``: how often their steps *would*
    have been clipped."""
    logp, entropy = agent.policy_terms(batch["obs"], batch["actions"])  # (N,), (N,)
    return prefixed(prefix, update_diagnostics(batch["logp"], logp, entropy, batch["values"],
                                               returns, clip_eps))


def record_update(history: History, metrics: dict, rollout: Rollout, start_time: float,
                  prefix: str, stop_at_return: float | None = None) -> bool:
    """Append one update's row (step, time, recent episodes, reward statistics and ``metrics``)
    and say whether training should stop: the mean of ``EPISODE_WINDOW`` consecutive finished
    episodes, the last of them from this rollout, reached ``stop_at_return`` (``None``: never)."""
    prev_step = history["global_step"][-1] if len(history) else 0
    prev_time = history["time/elapsed"][-1] if len(history) else 0.0
    elapsed = time.perf_counter() - start_time
    lengths = history.episodes["length"][-EPISODE_WINDOW:]
    row = {
        "global_step": prev_step + rollout.rewards.numel(),
        "time/elapsed": elapsed,
        "rollout/episodic_return": history.recent_return(EPISODE_WINDOW),
        "rollout/episode_length": sum(lengths) / len(lengths) if lengths else math.nan,
        f"{prefix}/mean_reward": float(rollout.rewards.mean()),
        f"{prefix}/reward_std": float(rollout.rewards.std()),
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


def return_reached(history: History, threshold: float, since: int = 0,
                   window: int = EPISODE_WINDOW) -> bool:
    """Whether the mean of ``window`` consecutive finished episodes, the last of them logged at
    index ``since`` or later, reached ``threshold``: :meth:`History.solved_at`'s test, checked
    only for the episodes of the latest rollout so that a training loop can ask every update."""
    r = history.episodes["return"]
    return any(sum(r[i - window + 1:i + 1]) >= threshold * window
               for i in range(max(since, window - 1), len(r)))
