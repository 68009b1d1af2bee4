"""Small shared helpers: seeding, shape checks and the NaN/inf guard.

Every algorithm module uses these so that errors read the same everywhere: a bad
argument is named with what was expected, and a NaN or inf stops training at the step it appears.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import random
import types
import typing
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["set_seed", "seed_offset", "shifted_seed", "generator", "rng", "check_shape",
           "check_same_shape", "check_finite", "check_range", "check_types"]

#: The seed knob: ``MINIPPO_SEED_OFFSET=k`` shifts every seed of a run by ``k`` (default 0), so
#: the whole book can be re-run on other random numbers (book/how_to_use.md).
SEED_OFFSET_VARIABLE = "MINIPPO_SEED_OFFSET"


def seed_offset() -> int:
    """The integer in ``$MINIPPO_SEED_OFFSET`` (0 when unset), read at every call."""
    raw = os.environ.get(SEED_OFFSET_VARIABLE, "").strip()
    if not raw:
        return 0
    try:
        offset = int(raw)
    except ValueError:
        raise ValueError(f"{SEED_OFFSET_VARIABLE} must be a non-negative integer, got {raw!r}") from None
    if offset < 0:
        raise ValueError(f"{SEED_OFFSET_VARIABLE} must be a non-negative integer, got {raw!r}")
    return offset


def shifted_seed(seed: int) -> int:
    """``seed + seed_offset()``: the seed a run actually uses for the ``seed`` its code names.

    Every place in minippo that turns a seed into random numbers (:func:`set_seed`,
    :func:`generator`, :func:`rng`, the environments, the trainers and samplers) goes through
    here exactly once, so ``MINIPPO_SEED_OFFSET=1`` runs seed 0 as seed 1, seed 1 as seed 2, ...
    Exercise checkers and the code task's data (its specs and SFT corpus) are not shifted: they
    are fixed test cases and a fixed data set, not a run's randomness.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed + seed_offset()


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch, so that one seed gives one set of numbers.

    The seed used is :func:`shifted_seed` of ``seed`` (``MINIPPO_SEED_OFFSET`` added).
    """
    seed = shifted_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`shifted_seed` of ``seed``."""
    return torch.Generator().manual_seed(shifted_seed(seed))


def rng(seed: int) -> random.Random:
    """A Python ``random.Random`` seeded with :func:`shifted_seed` of ``seed``."""
    return random.Random(shifted_seed(seed))


def check_shape(name: str, x: torch.Tensor, shape: tuple) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (``None`` matches any size)."""
    if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` naming every argument and its shape unless all shapes are equal
    (``TypeError`` naming the argument if one is not a tensor, e.g. a NumPy array)."""
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{k} must be a torch.Tensor, got {type(v).__name__} "
                            "(torch.as_tensor converts a NumPy array or a list)")
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shapes must match: {listed}")


def check_range(name: str, value, low=None, high=None, *, low_open=False, high_open=False) -> None:
    """Raise ``ValueError`` naming ``name`` and the allowed range unless ``value`` lies in it
    (``TypeError`` if it is not a real number at all, e.g. the string ``"0.01"``)."""
    if value is not None and (isinstance(value, (bool, str)) or not hasattr(value, "__float__")):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    bad = value is None or (isinstance(value, float) and math.isnan(value))
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value >= high if high_open else value > high
    if bad:
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        interval = ("(" if low_open else "[") + f"{lo}, {hi}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def check_finite(update: int, **values) -> None:
    """Stop training on a NaN or inf with the update number and a hint.

    ``check_finite(update, policy_loss=..., value_loss=...)``; values may be floats or tensors
    of any size (a rollout's rewards: the first bad entry is named).
    """
    for name, v in values.items():
        if isinstance(v, torch.Tensor) and v.numel() != 1:
            bad = (~torch.isfinite(v.detach())).nonzero()
            if len(bad) == 0:
                continue
            index = tuple(int(i) for i in bad[0])
            what = f"{name}{list(index)} is {float(v[index])}"
        else:
            x = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            if math.isfinite(x):
                continue
            what = f"{name} is {x}"
        raise FloatingPointError(
            f"{what} at update {update}. Hints: lower the learning rate, "
            "check rewards and observations for NaN/inf, keep gradient clipping "
            "(max_grad_norm) on, and normalise advantages."
        )


def _type_problem(value, kind) -> str | None:
    """What is wrong with ``value`` for the annotation ``kind`` (None: nothing)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, k) for k in args]
        if all(problems):
            return " or ".join(p for p in problems)
        return None
    if kind is type(None):
        return None if value is None else "None"
    if kind is bool:
        return None if isinstance(value, bool) else "a bool (True or False)"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an int"
    if kind is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return None if ok else "a number"
    if kind is str:
        return None if isinstance(value, str) else "a string"
    if origin in (Sequence, tuple, list) or kind in (tuple, list):
        item = args[0] if args else None
        if not isinstance(value, (tuple, list)) or (
                item is not None and any(_type_problem(v, item) for v in value)):
            return f"a tuple of {item.__name__}s" if item is not None else "a tuple"
        return None
    if isinstance(kind, type):
        return None if isinstance(value, kind) else f"a {kind.__name__}"
    return None  # an annotation this check does not know (Callable, ...): not checked


def check_types(config) -> None:
    """Raise ``TypeError`` naming the field and the expected type for every field of the
    dataclass ``config`` whose value does not match its annotation: ``PPOConfig(learning_rate="0.01")``,
    ``PPOConfig(update_epochs=2.5)``.  ``int`` fields refuse floats and bools, ``float`` fields
    take ints, ``X | None`` takes None.  Configs call it first in ``__post_init__``, before the
    range checks (which then only see numbers)."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        expected = _type_problem(value, hints[field.name])
        if expected:
            raise TypeError(f"{field.name} must be {expected}, got {value!r} "
                            f"({type(value).__name__})")

