"""minippo: PPO from first principles — the package every chapter of the book imports.

One file per idea, one function per equation; each docstring names its equation and chapter.

Shape glossary (trailing ``# (T, B)`` comments in the code use these letters):

====  =========================================================
T     time steps in a rollout (time-major: index ``[t, b]``)
B     parallel environments, or sequences in a batch
O     observation size
A     action dimension (continuous actions) or number of actions
L     tokens in a sequence (prompt + response)
V     vocabulary size
D     hidden width
K     arms of a bandit, or states of a chain MDP (S)
====  =========================================================
"""
from minippo.utils import set_seed, check_finite, check_shape, check_same_shape, check_range, glue
from minippo.history import History
from minippo import (
    envs,
    nets,
    rollout,
    advantages,
    objectives,
    schedules,
    reinforce,
    a2c,
    trpo,
    ppo,
    plotting,
    checks,
    lm,
)

__version__ = "0.1.0"
