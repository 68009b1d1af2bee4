"""Optimizers and the optimizer step every trainer of the book takes.

Both halves of the book train with Adam (Kingma & Ba 2015): the CartPole trainers and the
language-model RL trainers with :func:`adam`, supervised fine-tuning and the reward model with
:func:`adamw`, which decays only the weight matrices (nanoGPT's rule: linear layers and
embeddings are decayed, biases and LayerNorm parameters are not).  A trainer sets the learning rate
of each iteration from a schedule (:mod:`minippo.schedules`) with :func:`set_learning_rate` and
takes each step with :func:`optimizer_step`, which returns the gradient norm before clipping
(the ``grad_norm`` that TRL logs).  :func:`fit_value` is the regression of a critic on its
targets that REINFORCE's baseline and TRPO's value function run apart from the policy step.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn

from minippo.objectives import value_loss
from minippo.schedules import warmup_cosine
from minippo.utils import check_finite, check_range

__all__ = ["adam", "adamw", "check_optimizer_fields", "warmup_cosine_learning_rate",
           "set_learning_rate", "optimizer_step", "fit_value"]


def adam(params, lr: float, eps: float = 1e-8) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015) for ``params``, with the fused kernel where torch has one.

    For networks this small the optimizer step is Python overhead per parameter tensor; the fused
    implementation (torch >= 2.4 on CPU) updates all of them in one call, about 4x faster here.
    It computes the same update as the default implementation.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):  # older torch: no fused Adam on this device
        return torch.optim.Adam(params, lr=lr, eps=eps)


def adamw(modules: Iterable[nn.Module], lr: float, weight_decay: float,
          eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over the parameters of ``modules`` that decays only the
    matrices of linear layers and embeddings (``p.dim() >= 2``), as nanoGPT's
    ``configure_optimizers`` does; biases and LayerNorm parameters are not decayed: shrinking a
    LayerNorm gain towards 0 or a bias towards 0 is not a simpler model.  A parameter shared by
    two modules (a tied embedding) is optimised once."""
    seen, decay, no_decay = set(), [], []
    for module in modules:
        for p in module.parameters():
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, eps=eps)


def check_optimizer_fields(config) -> None:
    """Check the fields the six language-model trainers share (SFT, reward model, RLHF-PPO, GRPO,
    RLOO, DPO): ``iterations`` >= 1, ``learning_rate`` > 0, ``warmup_iterations`` an int in
    ``[0, iterations)``, ``min_learning_rate`` in ``[0, learning_rate]``, and, where the config
    has them, ``max_grad_norm`` > 0 (``None``: no clipping), ``weight_decay`` >= 0 and
    ``adam_eps`` > 0."""
    check_range("iterations", config.iterations, 1)
    check_range("learning_rate", config.learning_rate, 0.0, low_open=True)
    if not 0 <= config.warmup_iterations < config.iterations:
        raise ValueError(f"warmup_iterations must be an int in [0, {config.iterations}), "
                         f"got {config.warmup_iterations!r}")
    check_range("min_learning_rate", config.min_learning_rate, 0.0, config.learning_rate)
    if getattr(config, "max_grad_norm", None) is not None:
        check_range("max_grad_norm", config.max_grad_norm, 0.0, low_open=True)
    if hasattr(config, "weight_decay"):
        check_range("weight_decay", config.weight_decay, 0.0)
    if hasattr(config, "adam_eps"):
        check_range("adam_eps", config.adam_eps, 0.0, low_open=True)


def warmup_cosine_learning_rate(config, iteration: int) -> float:
    """The learning rate of ``iteration`` (0-based) under the language-model trainers' schedule:
    linear warm-up over ``config.warmup_iterations`` to ``config.learning_rate``, then cosine
    decay to ``config.min_learning_rate`` at ``config.iterations``
    (:func:`minippo.schedules.warmup_cosine`)."""
    return warmup_cosine(iteration, config.iterations, config.learning_rate,
                         config.warmup_iterations, config.min_learning_rate)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (the trainers compute it from a schedule)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(params: list[Tensor], optimizer: torch.optim.Optimizer, loss: Tensor,
                   max_grad_norm: float | None, *, foreach: bool | None = None) -> Tensor:
    """``zero_grad``, ``backward``, clip the global gradient norm of ``params`` to
    ``max_grad_norm`` (``None``: no clipping), ``step``.  Returns the global L2 norm of the
    gradient before clipping (a 0-dim tensor; ``float()`` it to log it).

    ``foreach=True`` clips all gradients in one vectorised call (what the CartPole trainers use;
    ``None`` lets torch choose).
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # max_norm = inf measures the norm and scales every gradient by exactly 1.0
    limit = math.inf if max_grad_norm is None else max_grad_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(params, limit, foreach=foreach)
    optimizer.step()
    return grad_norm


def fit_value(agent, optimizer: torch.optim.Optimizer, obs: Tensor, ret: Tensor, epochs: int,
              minibatches: int, update_index: int = 1) -> float:
    """Regress V on its targets: ``epochs`` passes of ``minibatches`` Adam steps on
    ``0.5 (V(s) - R)^2`` (:func:`minippo.objectives.value_loss`).  TRPO and REINFORCE's baseline
    fit their critic this way, apart from the policy step (GAE paper, Section 5; Spinning Up's
    ``train_v_iters``).  ``obs`` (N, O), ``ret`` (N,).  Returns the mean loss (NaN if no step)."""
    n = ret.shape[0]
    mb = n // minibatches
    params = agent.value_parameters()
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(n)
        for start in range(0, mb * minibatches, mb):
            idx = perm[start:start + mb]  # (M,)
            loss = value_loss(agent.value(obs[idx]), ret[idx])
            check_finite(update_index, value_loss=loss)
            optimizer_step(params, optimizer, loss, None, foreach=True)
            losses.append(loss.item())
    return sum(losses) / len(losses) if losses else math.nan
