"""Returns and advantages: from Monte-Carlo returns to generalised advantage estimation.

The module follows Chapter 2 (``chapters/02_value_functions_gae.ipynb``) top to bottom:
discounted return of one episode, batched reward-to-go, TD residuals, n-step and lambda-returns,
GAE, and the advantage normalisation used by PPO.

Layout. Rollouts are time-major ``(T, B)``: index ``[t, b]`` is step ``t`` of environment ``b``.
Every per-step function also takes ``time_dim=`` (default 0), so a language model's ``(B, L)``
token tensors go through the *same* code with ``time_dim=1``; nothing is copied or transposed by
the caller. A ``mask`` marks valid steps (for tokens: response tokens before padding); outside it
rewards, values and advantages count as zero, which is what TRL does with its padding masks.

Episode ends. ``terminated`` is a real end (pole fell, EOS): no bootstrap. ``truncated`` is a
time-limit cut: the episode could have continued, so the value of the state it reached,
``next_values[t] = V(final_obs)``, is bootstrapped. Both stop the backward recursion, because the
next row of the rollout belongs to a new episode. (Stable-Baselines3 issue 633 explains why
treating a truncation as a termination biases the value function.)

``next_values[t]`` is V of the next state *in the same episode* (see ``minippo.rollout``):
``values[t+1]`` where the episode goes on, ``V(final_obs)`` where truncated, anything (it is
multiplied by 0) where terminated, and V of the last observation at ``t = T-1``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from minippo.utils import check_range, check_same_shape

__all__ = [
    "discounted_returns",
    "reward_to_go",
    "td_residuals",
    "n_step_returns",
    "lambda_returns",
    "gae",
    "advantages_and_returns",
    "whiten",
    "next_step_values",
]


# --------------------------------------------------------------------------- helpers
def _floats(name: str, x) -> Tensor:
    """``x`` as a floating tensor with only finite entries, or an error that names ``name``.

    A tensor is used as it is (an integer one becomes float); a NumPy array or a (nested) list
    of numbers is converted.  A NaN or inf raises ``ValueError`` with its index: it would
    otherwise flow silently into every advantage of its episode.
    """
    x = _tensor(name, x)
    if not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    _check_finite(name, x)
    return x


def _tensor(name: str, x) -> Tensor:
    """A tensor as it is; a NumPy array or a (nested) list converted; anything else refused."""
    if isinstance(x, Tensor):
        return x
    if not isinstance(x, (np.ndarray, list, tuple)):
        raise TypeError(f"{name} must be a tensor (or a NumPy array or a list), "
                        f"got {type(x).__name__}")
    return torch.as_tensor(x)


def _check_finite(name: str, x: Tensor) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        index = [int(i) for i in bad.nonzero()[0]]
        raise ValueError(f"{name} must be finite, got {float(x[tuple(index)])} at index {index}")


def _flags(name: str, flags, like: Tensor) -> Tensor:
    """Episode-end flags (or a mask) as a bool tensor; ``None`` means never.

    Bool tensors are used as they are; numbers must be 0 or 1 (``terminated=0.5`` is refused,
    not read as True).
    """
    if flags is None:
        return torch.zeros_like(like, dtype=torch.bool)
    flags = _tensor(name, flags).to(like.device)
    if flags.dtype != torch.bool:
        bad = (flags != 0) & (flags != 1)
        if bool(bad.any()):
            index = [int(i) for i in bad.nonzero()[0]]
            raise ValueError(f"{name} must hold booleans (or 0 and 1), got "
                             f"{flags[tuple(index)].item()!r} at index {index}")
        flags = flags != 0
    return flags


def _check_steps(name: str, x: Tensor, time_dim: int) -> None:
    """At least one time step: an empty rollout has no advantages."""
    if x.dim() == 0 or x.shape[time_dim] == 0:
        raise ValueError(f"{name} must have at least one time step along dimension {time_dim}, "
                         f"got shape {tuple(x.shape)}")


def _check_discount(gamma: float, gae_lambda: float | None = None) -> None:
    check_range("gamma", gamma, 0.0, 1.0)
    if gae_lambda is not None:
        check_range("gae_lambda", gae_lambda, 0.0, 1.0)


def next_step_values(values: Tensor, mask: Tensor | None = None, time_dim: int = 0) -> Tensor:
    """``values`` shifted one step back in time: ``out[t] = V(s_{t+1})``, 0 past the end.

    For sequences that end *inside* the tensor (a language model's response followed by
    padding), this is the ``next_values`` argument of :func:`gae`: the value of the next token
    where it is valid (``mask[t+1]``), and 0 after the last valid token and at the last
    position, so the sequence end is a terminal state. Not for environment rollouts, whose
    last step and truncations need ``V(final_obs)`` (``minippo.rollout`` builds those).
    """
    values = _floats("values", values)
    v = values.movedim(time_dim, 0)  # (T, ...)
    nv = torch.zeros_like(v)  # (T, ...)
    nv[:-1] = v[1:]
    if mask is not None:
        m = _flags("mask", mask, values)
        check_same_shape(values=values, mask=m)
        m = m.movedim(time_dim, 0)  # (T, ...)
        nxt = torch.zeros_like(m)
        nxt[:-1] = m[1:]
        nv = nv * nxt.to(nv.dtype)
    return nv.movedim(0, time_dim).contiguous()


# --------------------------------------------------------------------------- Monte-Carlo
def reward_to_go(rewards: Tensor, dones: Tensor | None = None, gamma: float = 1.0, *,
                 time_dim: int = 0) -> Tensor:
    r"""Discounted reward-to-go of every step, restarting at episode ends; no bootstrap.

    .. math:: G_t = r_t + \gamma\,(1 - d_t)\,G_{t+1}, \qquad G_T = 0

    which within one episode is :math:`\sum_{t'=t}^{\text{end}} \gamma^{t'-t} r_{t'}`.
    Source: the "reward-to-go" policy gradient (Spinning Up, "Don't let the past distract you";
    Sutton & Barto 2018, eq. 3.8). Chapter 1, policy gradient.

    Args:
        rewards: ``(T, B)`` (or ``(T,)``) rewards, time along ``time_dim``.
        dones: same shape, True where the episode ends *after* step ``t``
            (``terminated | truncated``); ``None`` means one episode per column.
        gamma: discount in [0, 1].
    Returns:
        ``(T, B)`` tensor, same shape and dtype as ``rewards``.
    """
    r = _floats("rewards", rewards)
    done = _flags("dones", dones, r)
    check_same_shape(rewards=r, dones=done)
    _check_steps("rewards", r, time_dim)
    check_range("gamma", gamma, 0.0, 1.0)
    r = r.movedim(time_dim, 0)  # (T, B)
    not_done = (~done.movedim(time_dim, 0)).to(r.dtype)  # (T, B)
    ret = torch.empty_like(r)  # (T, B)
    running = torch.zeros_like(r[0])  # (B,)
    for t in reversed(range(r.shape[0])):
        running = r[t] + gamma * not_done[t] * running  # (B,)
        ret[t] = running
    return ret.movedim(0, time_dim).contiguous()


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    r"""Discounted return of every step of ONE episode:
    :math:`G_t = \sum_{k=0}^{T-1-t} \gamma^k r_{t+k}`.

    Computed backwards with :math:`G_t = r_t + \gamma G_{t+1}`, :math:`G_T = 0`.
    Source: Sutton & Barto (2018), eqs. 3.8 and 3.9. Chapter 1, policy gradient.

    Args:
        rewards: ``(T,)`` rewards of one complete episode (a list is accepted).
        gamma: discount in [0, 1].
    Returns:
        ``(T,)`` float tensor of returns.
    """
    r = _floats("rewards", rewards)
    if r.dim() != 1:
        raise ValueError(f"rewards must have shape (T,) for one episode, got {tuple(r.shape)}; "
                         "use reward_to_go for (T, B) batches with episode ends")
    return reward_to_go(r, None, gamma)


# --------------------------------------------------------------------------- TD
def td_residuals(rewards: Tensor, values: Tensor, next_values: Tensor | None,
                 terminated: Tensor | None, gamma: float, *, mask: Tensor | None = None,
                 time_dim: int = 0) -> Tensor:
    r"""One-step TD residuals
    :math:`\delta_t = r_t + \gamma (1 - \text{term}_t) V(s_{t+1}) - V(s_t)`.

    Source: GAE paper (Schulman et al. 2016, "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation"), eq. 10; Sutton & Barto (2018), eq. 6.5.
    Chapter 2, value functions and GAE.

    Args:
        rewards, values: ``(T, B)``.
        next_values: ``(T, B)``, V of the next state in the same episode (module docstring);
            ``None``: :func:`next_step_values` (sequences that end inside the tensor).
        terminated: ``(T, B)`` bool, True where the episode really ended at ``t``; ``None``: never.
        gamma: discount in [0, 1].
        mask: optional ``(T, B)`` valid-step mask; ``delta`` is 0 outside it.
        time_dim: which dimension is time (1 for ``(B, L)`` token tensors).
    Returns:
        ``(T, B)`` tensor ``delta``.
    """
    check_range("gamma", gamma, 0.0, 1.0)
    rewards, values, next_values, term, m, _ = _episode_ends(rewards, values, next_values, terminated,
                                                             None, mask, time_dim)
    not_term = (~term).to(values.dtype)  # (T, B)
    delta = rewards + gamma * not_term * next_values - values  # (T, B)
    if m is not None:
        delta = delta * m.to(delta.dtype)  # (T, B)
    return delta


def n_step_returns(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor | None,
                   truncated: Tensor | None, gamma: float, n: int, *, time_dim: int = 0) -> Tensor:
    r"""n-step bootstrapped returns, cut at episode ends and at the end of the rollout.

    .. math:: G^{(n)}_t = \sum_{k=0}^{m-1} \gamma^k r_{t+k} + \gamma^{m} (1-\text{term}_{t+m-1})\,
              V(s_{t+m})

    where :math:`m \le n` is the number of steps until the window, the episode or the rollout
    ends first, and :math:`V(s_{t+m})` is ``next_values[t+m-1]`` (so truncations bootstrap from
    ``V(final_obs)``). ``n = 1`` is the TD target ``r + gamma V'``; ``n >= T`` is the
    Monte-Carlo return bootstrapped only at truncations and the rollout end.
    Source: Sutton & Barto (2018), eq. 7.1; the A3C/A2C target (Mnih et al. 2016, Algorithm S3).
    Chapter 2, value functions and GAE.

    Returns:
        ``(T, B)`` tensor.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    check_range("gamma", gamma, 0.0, 1.0)
    if next_values is None:
        raise ValueError("next_values must be given: an n-step return bootstraps from V(s_{t+m})")
    rewards, _, next_values, term, _, carry = _episode_ends(rewards, values, next_values, terminated,
                                                            truncated, None, time_dim)
    r = rewards.movedim(time_dim, 0)  # (T, B)
    nv = next_values.movedim(time_dim, 0)  # (T, B)
    term = term.movedim(time_dim, 0)  # (T, B)
    done = carry == 0  # (T, B) the episode ended at t (terminated or truncated)
    T = r.shape[0]
    ret = torch.zeros_like(r)  # (T, B): G_t being accumulated, one window per row t
    disc = torch.ones_like(r)  # (T, B): gamma^k for the window starting at t
    alive = torch.ones_like(done)  # (T, B): window of row t still open
    for k in range(min(n, T)):
        rows = T - k  # windows t = 0..T-k-1 can reach step t+k
        a = alive[:rows]  # (T-k, B)
        ret[:rows] += a * disc[:rows] * r[k:]
        # the window closes at step t+k if the episode ends, n steps are used, or the rollout ends
        end = a & (done[k:] | (k == n - 1))  # (T-k, B)
        end[-1] = a[-1]  # row T-k-1 reaches the last step of the rollout
        boot = gamma * (~term[k:]).to(r.dtype) * nv[k:]  # (T-k, B)
        ret[:rows] += end * disc[:rows] * boot
        alive[:rows] = a & ~end
        disc[:rows] *= gamma
    return ret.movedim(0, time_dim).contiguous()


# --------------------------------------------------------------------------- GAE
def _episode_ends(rewards, values, next_values, terminated, truncated, mask,
                  time_dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor]:
    """Validated ``(rewards, values, next_values, terminated, mask, carry)`` for the backward
    recursions (floating tensors, bool flags and mask, every shape equal, at least one step).

    ``carry`` is time-major ``(T, B)``: ``(1 - done_t) * valid_t``, the factor that lets a
    recursion carry the future of step ``t+1`` back into step ``t`` (an invalid step ends the
    recursion like an episode end).
    """
    rewards, values = _floats("rewards", rewards), _floats("values", values)
    if next_values is None:
        next_values = next_step_values(values, mask, time_dim)
    next_values = _floats("next_values", next_values)
    term = _flags("terminated", terminated, rewards)
    trunc = _flags("truncated", truncated, rewards)
    inputs = dict(rewards=rewards, values=values, next_values=next_values, terminated=term)
    check_same_shape(**inputs, **({} if truncated is None else {"truncated": trunc}))
    _check_steps("rewards", rewards, time_dim)
    carry = (~(term | trunc)).movedim(time_dim, 0).to(rewards.dtype)  # (T, B)
    if mask is not None:
        mask = _flags("mask", mask, rewards)
        check_same_shape(rewards=rewards, mask=mask)
        carry = carry * mask.movedim(time_dim, 0).to(rewards.dtype)  # (T, B)
    return rewards, values, next_values, term, mask, carry


def gae(rewards: Tensor, values: Tensor, next_values: Tensor | None, terminated: Tensor | None,
        truncated: Tensor | None, gamma: float, gae_lambda: float, *, mask: Tensor | None = None,
        time_dim: int = 0) -> Tensor:
    r"""Generalised advantage estimation, one backward pass over time, vectorised over the batch.

    .. math::
        \delta_t = r_t + \gamma (1-\text{term}_t) V(s_{t+1}) - V(s_t), \qquad
        \hat A_t = \delta_t + \gamma\lambda\,(1-\text{done}_t)\,\hat A_{t+1}, \quad \hat A_T = 0

    with :math:`\text{done} = \text{term} \lor \text{trunc}`, i.e.
    :math:`\hat A_t = \sum_{l \ge 0} (\gamma\lambda)^l \delta_{t+l}` within the episode.
    ``lambda = 0`` gives the TD residual, ``lambda = 1`` the Monte-Carlo return minus ``V``.
    Source: GAE paper (Schulman et al. 2016), eq. 16; the recursion as in PPO paper eq. 11-12.
    Chapter 2, value functions and GAE.

    Truncation: ``next_values[t]`` must hold ``V(final_obs)`` at truncated steps; it is
    bootstrapped there (``term_t = 0``) and not at terminated steps, and the recursion is cut at
    both. Passing ``terminated=terminated | truncated`` reproduces the common "treat time-outs as
    deaths" bug (Chapter 2's truncation lab).

    Language-model layout ``(B, L)``: pass ``time_dim=1`` and the response mask; with
    ``next_values=None`` the value after the last valid token is 0 (the sequence ends there), so
    RLHF's per-token rewards with ``gamma=1`` need one call::

        adv = gae(rewards, values, None, None, None, 1.0, lam, mask=mask, time_dim=1)  # (B, L)

    Args:
        rewards, values: ``(T, B)`` (time along ``time_dim``).
        next_values: ``(T, B)``, V of the next state in the same episode; ``None``:
            :func:`next_step_values` of ``values``.
        terminated, truncated: ``(T, B)`` bool episode ends at step ``t``; ``None``: never.
        gamma, gae_lambda: in [0, 1].
        mask: optional ``(T, B)`` valid-step mask; advantages are 0 outside it and the recursion
            does not pass through invalid steps.
    Returns:
        ``(T, B)`` advantages, same dtype as ``rewards``.
    """
    _check_discount(gamma, gae_lambda)
    rewards, values, next_values, term, mask, not_done = _episode_ends(
        rewards, values, next_values, terminated, truncated, mask, time_dim)
    delta = td_residuals(rewards, values, next_values, term, gamma, mask=mask)  # (T, B)
    delta = delta.movedim(time_dim, 0)  # (T, B)
    adv = torch.empty_like(delta)  # (T, B)
    running = torch.zeros_like(delta[0])  # (B,): A_{t+1}
    for t in reversed(range(delta.shape[0])):
        running = delta[t] + gamma * gae_lambda * not_done[t] * running  # (B,)
        adv[t] = running
    return adv.movedim(0, time_dim).contiguous()


def advantages_and_returns(rollout, gamma: float, gae_lambda: float) -> tuple[Tensor, Tensor]:
    """GAE advantages of a :class:`minippo.rollout.Rollout` and their value targets
    ``ret = adv + V_old`` (the lambda-returns), both (T, B).  A2C, TRPO and PPO use it.

    Source: GAE paper (Schulman et al. 2016), eq. 16; PPO paper eqs. 11-12.  Chapter 2.
    """
    adv = gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated,
              rollout.truncated, gamma, gae_lambda)  # (T, B)
    return adv, adv + rollout.values  # (T, B), (T, B)


def lambda_returns(rewards: Tensor, values: Tensor, next_values: Tensor | None,
                   terminated: Tensor | None, truncated: Tensor | None, gamma: float,
                   gae_lambda: float, *, mask: Tensor | None = None, time_dim: int = 0) -> Tensor:
    r"""The lambda-return, computed by its own recursion (the value-function target of PPO).

    .. math:: G^\lambda_t = r_t + \gamma (1-\text{term}_t)\big[V(s_{t+1})
              + \lambda (1-\text{done}_t) (G^\lambda_{t+1} - V(s_{t+1}))\big]

    (the recursive form of :math:`G^\lambda_t = (1-\lambda)\sum_n \lambda^{n-1} G^{(n)}_t`),
    with :math:`G^\lambda_{t+1}` replaced by :math:`V(s_{t+1})` at episode ends and at the end of
    the rollout. When ``next_values[t] == values[t+1]`` inside episodes (as every rollout
    guarantees), ``lambda_returns == gae + values``: the "returns = advantages + values" of
    PPO implementations; a test pins it.
    Source: Sutton & Barto (2018), eq. 12.18 (and 12.2); GAE paper (Schulman et al. 2016),
    Section 5 (value target). Chapter 2, value functions and GAE.

    Returns:
        ``(T, B)`` tensor, 0 outside ``mask``.
    """
    _check_discount(gamma, gae_lambda)
    rewards, values, next_values, term, mask, not_done = _episode_ends(
        rewards, values, next_values, terminated, truncated, mask, time_dim)
    r, nv = rewards.movedim(time_dim, 0), next_values.movedim(time_dim, 0)  # (T, B)
    not_term = (~term).movedim(time_dim, 0).to(r.dtype)  # (T, B)
    valid = None
    if mask is not None:
        valid = mask.movedim(time_dim, 0).to(r.dtype)  # (T, B)
    ret = torch.empty_like(r)  # (T, B)
    running = torch.zeros_like(r[0])  # (B,): G_{t+1}; unused where done_t or t = T-1
    for t in reversed(range(r.shape[0])):
        carry = not_done[t] * (running - nv[t]) if t < r.shape[0] - 1 else 0.0  # (B,)
        running = r[t] + gamma * not_term[t] * (nv[t] + gae_lambda * carry)  # (B,)
        if valid is not None:
            running = running * valid[t]
        ret[t] = running
    return ret.movedim(0, time_dim).contiguous()


# --------------------------------------------------------------------------- normalisation
def whiten(x: Tensor, mask: Tensor | None = None, shift_mean: bool = True,
           eps: float = 1e-8) -> Tensor:
    r"""Normalise to zero mean and unit variance: :math:`(x - \mu) / \sqrt{\sigma^2 + \epsilon}`.

    With a ``mask``, :math:`\mu` and :math:`\sigma^2` are taken over the masked entries only
    (TRL's ``masked_whiten``) and entries outside the mask are returned as 0.
    :math:`\sigma^2` is the unbiased (Bessel-corrected) variance, as ``torch.var`` and TRL;
    CleanRL writes ``(x - mean) / (std + 1e-8)``, which differs only in the last digits.
    ``shift_mean=False`` adds the mean back (TRL uses it for rewards: scale only).

    Source: advantage normalisation (Engstrom et al. 2020, "Implementation Matters in Deep
    Policy Gradients", and the OpenAI Baselines PPO code); TRL's ``masked_whiten``.
    Chapter 5, PPO in practice.

    Args:
        x: any shape.
        mask: optional same-shape bool/0-1 mask of valid entries.
        shift_mean: if False, keep the original mean.
        eps: added to the variance.
    """
    from minippo.objectives import masked_mean  # objectives owns masked_mean (API.md)

    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if mask is None:
        if x.numel() < 2:
            raise ValueError(f"whiten needs at least 2 entries, got x of shape {tuple(x.shape)}")
        _check_finite("x", x)
        mean, var = x.mean(), x.var()
        out = (x - mean) * torch.rsqrt(var + eps)
        return out + mean if not shift_mean else out
    m = _flags("mask", mask, x)
    check_same_shape(x=x, mask=m)
    count = int(m.sum())
    if count < 2:
        raise ValueError(f"whiten needs at least 2 entries inside the mask, got {count}")
    _check_finite("x (inside the mask)", x[m])
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m) * count / (count - 1)  # unbiased, as TRL's masked_var
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, torch.zeros_like(out))
