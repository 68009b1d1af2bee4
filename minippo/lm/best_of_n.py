"""Best-of-n sampling against a learned reward: its KL to the sampler and its expected true reward.

Best-of-n draws n responses of a reference policy for one prompt and keeps the one a proxy
reward scores highest. It is the other optimiser of Gao et al.'s over-optimisation study
(Gao, Schulman and Hilton 2023, section 2), next to RL; chapter 7 derives the two functions below
(its equations ``ch07-eq-bon-kl`` and ``ch07-eq-bon-estimator``) and plots both optimisers on
one sqrt(KL) axis.

Shapes (book/notation.md): Q prompts, G responses sampled for each (the pool, n_pool in chapter 7),
n <= G the best-of-n size.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["best_of_n_kl", "best_of_n_weights", "best_of_n_per_prompt", "best_of_n_estimate"]


def best_of_n_kl(n: int | Sequence[int] | np.ndarray) -> np.ndarray | float:
    r"""KL(best-of-n || reference) = log n - (n - 1)/n, in nats (chapter 7, eq. ``ch07-eq-bon-kl``).

    With a proxy score that has a continuous distribution under the reference (no ties), the
    kept response has density :math:`\pi_n(y) = n\,U(y)^{n-1}\pi_\text{ref}(y)`, where
    :math:`U(y)` is the probability that a reference sample scores at most y's score (chapter 7),
    and :math:`\mathrm{KL} = \log n + (n-1)\,\mathbb E_{\pi_n}[\log U(y)]`; under best-of-n,
    :math:`U(y)` is distributed as the largest of n uniforms, whose log has mean -1/n.  Stiennon et
    al. (2020), appendix G.3; Gao et al. (2023), section 2.  Where the reference repeats responses
    (ties) the true KL is smaller: the formula is then an upper bound (Beirami et al. 2024).
    """
    n_arr = np.asarray(n, dtype=float)
    if np.any(n_arr < 1):
        raise ValueError(f"n must be >= 1, got {n!r}")
    kl = np.log(n_arr) - (n_arr - 1) / n_arr
    return float(kl) if kl.ndim == 0 else kl


def best_of_n_weights(pool_size: int, n: int) -> np.ndarray:
    r"""Probability that the sample of rank i (ascending, 1-based) is the best of a random n-subset.

    The weight is :math:`\binom{i-1}{n-1} / \binom{n_\text{pool}}{n}` (``n_pool = pool_size``):
    the subsets whose largest member is the i-th smallest of the pool are those that contain it
    and n - 1 of the i - 1 below it (chapter 7, eq. ``ch07-eq-bon-estimator``).  Returns shape
    ``(pool_size,)``; the weights sum to 1.
    """
    if not 1 <= n <= pool_size:
        raise ValueError(f"n must be in [1, pool_size={pool_size}], got {n}")
    total = math.comb(pool_size, n)
    return np.array([math.comb(i - 1, n - 1) / total for i in range(1, pool_size + 1)])


def best_of_n_per_prompt(proxy: torch.Tensor | np.ndarray, value: torch.Tensor | np.ndarray,
                         ns: Sequence[int]) -> np.ndarray:
    r"""Per prompt, the unbiased estimate of E[value of the best-of-n response], shape ``(Q, len(ns))``.

    ``proxy`` and ``value`` are ``(Q, G)``: G responses per prompt, the score that selects
    (the learned reward) and the quantity to average (the true reward, or the proxy itself).
    Per prompt the responses are sorted by ``proxy`` and ``value`` is averaged with
    :func:`best_of_n_weights`: the mean of the best-of-n value over all
    :math:`\binom{n_\text{pool}}{n}` subsets of the pool, an unbiased estimate of best-of-n on fresh samples
    (Nakano et al. 2021; Gao et al. 2023).  Ties in ``proxy`` (repeated responses) are broken
    by a stable sort; identical responses have identical values, so their order does not matter.
    Differences between columns are paired: the same pool serves every n.
    """
    proxy = np.asarray(proxy, dtype=float)  # (Q, G)
    value = np.asarray(value, dtype=float)  # (Q, G)
    if proxy.ndim != 2 or proxy.shape != value.shape:
        raise ValueError(f"proxy and value must both be (Q, G), Q prompts x G responses each; "
                         f"got {proxy.shape} and {value.shape}")
    order = np.argsort(proxy, axis=1, kind="stable")  # (Q, G), ascending
    ranked = np.take_along_axis(value, order, axis=1)  # (Q, G)
    return np.stack([ranked @ best_of_n_weights(proxy.shape[1], n) for n in ns], axis=1)


def best_of_n_estimate(proxy: torch.Tensor | np.ndarray, value: torch.Tensor | np.ndarray,
                       ns: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`best_of_n_per_prompt`, summarised: ``(mean, standard error)`` over prompts, each
    ``(len(ns),)``."""
    per_prompt = best_of_n_per_prompt(proxy, value, ns)  # (Q, len(ns))
    Q = per_prompt.shape[0]
    se = per_prompt.std(axis=0, ddof=1) / np.sqrt(Q) if Q > 1 else np.full(len(ns), np.nan)
    return per_prompt.mean(axis=0), se
