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
import os as _os

# Same seed, same machine, same numbers (book/how_to_use.md, "What your run will and will not
# reproduce"). Without a conditional-numerical-
# reproducibility mode, Intel's MKL (torch's CPU BLAS) may take a different code path from one
# run to the next on the same Intel CPU, depending on memory alignment; AUTO keeps the fastest
# path for this CPU and STRICT makes it independent of alignment. MKL reads the variable when it
# first computes, so setting it here, after `import torch` but before any matmul, takes effect.
# A value the user set (for example MKL_CBWR=COMPATIBLE, to match other CPUs) is kept.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from minippo.utils import set_seed, generator, rng, check_finite, check_shape, check_same_shape, check_range
from minippo.prose import glue
from minippo.history import History
from minippo import (
    envs,
    nets,
    rollout,
    advantages,
    objectives,
    schedules,
    optim,
    training,
    reinforce,
    a2c,
    trpo,
    ppo,
    gaussian,
    normalize,
    checks,
    prose,
)

__version__ = "0.1.0"

#: Imported on first use, so that ``import minippo`` stays light: the plots and the figure style
#: need matplotlib (and seaborn), the language-model half its whole stack (model, sandbox,
#: trainers).
_LAZY_MODULES = ("plotting", "style", "lm")


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"minippo.{name}")  # also binds minippo.<name>
    raise AttributeError(f"module 'minippo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES))
