"""The record a training loop returns: one row per update and one row per finished episode.

Updates return plain metric dicts (names as on the book's metric
dictionary, ``book/metrics.md``, e.g. ``ppo/clip_fraction``); a trainer
appends them here with :meth:`History.log_update`, and the plotting functions read it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["History", "EPISODE_WINDOW", "prefixed"]

#: Finished episodes averaged by ``rollout/episodic_return`` and by the stop/solve test: "the mean
#: of the last 20 episodes reaches 475" is the book's (and its benchmark's) definition of solved.
EPISODE_WINDOW = 20


def prefixed(prefix: str, metrics: dict) -> dict:
    """``{"kl_divergence": x}`` -> ``{"<prefix>/kl_divergence": x}``: every trainer logs under its
    own algorithm's name (``ppo/``, ``trpo/``, ``a2c/``, ``reinforce/``, ``grpo/``, ...)."""
    return {f"{prefix}/{name}": value for name, value in metrics.items()}


@dataclass
class History:
    """Metrics of one training run.

    ``updates[name]`` has one value per update (always with ``global_step`` and ``time/elapsed``);
    ``episodes`` has one row per finished episode: ``global_step``, ``time/elapsed``, ``return``,
    ``length``.  ``config`` is the config dataclass of the run (or ``None``).
    """

    updates: dict = field(default_factory=dict)
    episodes: dict = field(default_factory=lambda: {"global_step": [], "time/elapsed": [], "return": [], "length": []})
    config: object = None

    def log_update(self, metrics: dict) -> None:
        """Append one update's metrics; a name seen for the first time is back-filled with NaN."""
        n = len(self)
        for k, v in metrics.items():
            col = self.updates.setdefault(k, [math.nan] * n)
            col.append(float(v))
        for k, col in self.updates.items():
            if len(col) == n:
                col.append(math.nan)

    def log_episodes(self, global_step: int, elapsed: float, returns, lengths) -> None:
        """Append finished episodes (``returns``/``lengths`` are sequences of equal length)."""
        for r, l in zip(returns, lengths):
            self.episodes["global_step"].append(int(global_step))
            self.episodes["time/elapsed"].append(float(elapsed))
            self.episodes["return"].append(float(r))
            self.episodes["length"].append(int(l))

    def __len__(self) -> int:
        return len(next(iter(self.updates.values()))) if self.updates else 0

    def __getitem__(self, name: str) -> list:
        return self.updates[name]

    @property
    def algorithm(self) -> str | None:
        """The name this run's trainer logs its update metrics under (``ppo``, ``trpo``, ``a2c``,
        ``reinforce``, ``grpo``, ``rloo``): the group of its ``<algorithm>/policy_loss`` column,
        or None if it has none."""
        for name in self.updates:
            group, _, metric = name.partition("/")
            if metric == "policy_loss":
                return group
        return None

    def metric(self, name: str) -> list:
        """The column ``<algorithm>/<name>`` of this run, whichever algorithm it is: compare
        ``kl_divergence`` across REINFORCE, TRPO and PPO runs with ``h.metric("kl_divergence")``."""
        if self.algorithm is None:
            raise KeyError(f"{name!r}: this history has no <algorithm>/policy_loss column")
        return self.updates[f"{self.algorithm}/{name}"]

    def recent_return(self, window: int = EPISODE_WINDOW) -> float:
        """Mean return of the last ``window`` finished episodes (NaN before the first)."""
        r = self.episodes["return"][-window:]
        return sum(r) / len(r) if r else math.nan

    def solved_at(self, threshold: float = 475.0, window: int = EPISODE_WINDOW):
        """First ``(global_step, seconds)`` at which the mean of the last ``window`` finished
        episodes reached ``threshold`` (the benchmark's definition), or ``None``."""
        r = self.episodes["return"]
        total = 0.0
        for i, x in enumerate(r):
            total += x
            if i >= window:
                total -= r[i - window]
            if i + 1 >= window and total / window >= threshold:
                return self.episodes["global_step"][i], self.episodes["time/elapsed"][i]
        return None

    def frame(self):
        """The per-update metrics as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.updates)

    def episode_frame(self):
        """The per-episode rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.episodes)
