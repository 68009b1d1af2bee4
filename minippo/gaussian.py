r"""The continuous-action policy of Chapter 4: a diagonal Gaussian, clipped or squashed.

A Gaussian policy over actions :math:`a \in \mathbb R^A` has a mean :math:`\mu_\theta(s)` from
the actor and a state-independent log standard deviation :math:`\log\sigma` (a free parameter,
PPO paper Section 6.1).  PPO needs two numbers from it per sample, the log-probability of the
action taken (for the ratio :math:`\rho_t(\theta)`) and the entropy (for the bonus :math:`c_2 S`).
Each is one function here, and :class:`minippo.nets.ActorCritic` computes the same numbers
through ``torch.distributions``; ``tests/test_continuous.py`` checks one against the other.

Real actuators have bounds (Pendulum's torque lies in :math:`[-2, 2]`), and a Gaussian does
not.  Two ways out, both in Chapter 4, "Continuous actions":

* **clip at the environment** (CleanRL, Stable-Baselines3's default, this book's
  :class:`minippo.envs.GymVecEnv` and :class:`minippo.envs.Pendulum`): the policy samples
  :math:`u \sim \mathcal N(\mu, \sigma^2)`, the simulator receives :math:`\mathrm{clip}(u)`, and
  PPO's ratio uses the density of :math:`u`, :func:`gaussian_log_prob`;
* **squash with tanh** (SAC; Haarnoja et al. 2018, Appendix C): the action is
  :math:`a = \tanh(u)` (times a scale), whose density follows from the change of variables,
  :func:`tanh_gaussian_log_prob`.

Shapes: N samples, A action dimensions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_log_prob", "gaussian_entropy", "tanh_log_det_jacobian",
           "tanh_gaussian_log_prob"]

LOG_2PI = math.log(2 * math.pi)


def _check_shapes(name: str, x: Tensor, mean: Tensor, log_std: Tensor) -> None:
    try:
        torch.broadcast_shapes(x.shape, mean.shape, log_std.shape)
    except RuntimeError as err:
        raise ValueError(f"{name} (shape {tuple(x.shape)}), mean ({tuple(mean.shape)}) and "
                         f"log_std ({tuple(log_std.shape)}) must broadcast") from err
    if x.dim() == 0:
        raise ValueError(f"{name} must have a last dimension A (the action), got a scalar")


def gaussian_log_prob(action: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    r"""Log-density of a diagonal Gaussian, summed over the action dimensions.

    .. math::

        \log\pi_\theta(a \mid s) = \sum_{i=1}^{A}\Big[-\frac{(a_i - \mu_i)^2}{2\sigma_i^2}
            - \log\sigma_i - \tfrac12\log 2\pi\Big]

    Chapter 4, "Continuous actions", equation {eq}`ch04-gauss-logp`.  ``action`` and ``mean``
    are (N, A), ``log_std`` (A,) or (N, A); returns (N,).  Written with ``log_std``, never
    ``log(std)``, so that a small :math:`\sigma` cannot produce ``log(0)``.
    """
    _check_shapes("action", action, mean, log_std)
    z = (action - mean) * torch.exp(-log_std)  # (N, A) standardised action
    return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)  # (N,)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    r"""Entropy of a diagonal Gaussian, :math:`\mathcal H = \sum_i \big(\tfrac12 + \tfrac12\log 2\pi
    + \log\sigma_i\big)`, summed over the last dimension.

    It depends on :math:`\sigma` only, not on the mean: the entropy bonus of a Gaussian policy
    pushes nothing but ``log_std``.  Chapter 4, "Continuous actions", equation
    {eq}`ch04-gauss-entropy`.  ``log_std`` (A,) or (N, A); returns () or (N,).
    """
    if log_std.dim() == 0:
        raise ValueError("log_std must have a last dimension A (the action), got a scalar")
    return (0.5 + 0.5 * LOG_2PI + log_std).sum(-1)


def tanh_log_det_jacobian(u: Tensor) -> Tensor:
    r""":math:`\sum_i \log\big(1 - \tanh^2 u_i\big)`, the log-determinant of the Jacobian of
    :math:`a = \tanh(u)`, in a form that stays finite for large :math:`|u|`:

    .. math:: \log(1 - \tanh^2 u) = 2\big(\log 2 - u - \operatorname{softplus}(-2u)\big).

    (The naive ``log(1 - tanh(u)**2)`` is ``log(0) = -inf`` in float32 once :math:`|u| > 9`.)
    Chapter 4, "Continuous actions", equation {eq}`ch04-tanh-logp`.  ``u`` (N, A) -> (N,).
    """
    if u.dim() == 0:
        raise ValueError("u must have a last dimension A (the action), got a scalar")
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)  # (N,)


def tanh_gaussian_log_prob(u: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    r"""Log-density of the squashed action :math:`a = \tanh(u)`, :math:`u \sim \mathcal N(\mu,
    \sigma^2)`, by the change of variables:

    .. math:: \log\pi_\theta(a \mid s) = \log\mathcal N(u;\, \mu, \sigma^2)
              - \sum_i \log\big(1 - \tanh^2 u_i\big).

    Takes the *pre-squash* sample ``u`` (N, A) (inverting tanh near :math:`\pm 1` loses all
    precision; SAC keeps ``u`` for the same reason); returns (N,).  An action scaled to
    :math:`[-c, c]` as :math:`c \tanh u` subtracts a further constant :math:`A \log c`, which
    cancels in PPO's ratio.  Chapter 4, "Continuous actions", equation {eq}`ch04-tanh-logp`.
    """
    return gaussian_log_prob(u, mean, log_std) - tanh_log_det_jacobian(u)  # (N,)
