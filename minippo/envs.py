"""Environments with one batched API: CartPole, a bandit, a chain MDP and a Gymnasium adapter.

Every environment here (except the one-step :class:`Bandit`) runs ``B`` copies at once and
speaks the same language:

* ``obs = env.reset(seed=None)`` returns a ``(B, O)`` float32 tensor;
* ``tr = env.step(action)`` returns a :class:`Transition`;
* episodes reset themselves *in the same step* they end ("same-step autoreset"): ``tr.obs``
  is already the first observation of the next episode, and ``tr.final_obs`` is the
  observation the step actually reached;
* ``tr.terminated`` (a real end: no bootstrap) and ``tr.truncated`` (a time limit: bootstrap
  from :math:`V(s_{final})`) are kept apart (book/notation.md, "Values and advantages"; SB3 issue 633).

Who uses what:

=================  ===========================================================================
:class:`CartPole`   every control chapter (1-5): REINFORCE, A2C, TRPO, PPO and the benchmark
:class:`Pendulum`   Chapter 4: PPO with a Gaussian policy (continuous actions)
:class:`Bandit`     Chapter 1: the score-function gradient estimate against the exact gradient
:class:`ChainMDP`   Chapter 2: bias and variance of n-step / GAE advantages against the truth
:class:`GymVecEnv`  no chapter trains on it: the reader's way to run PPO on any Gymnasium task
=================  ===========================================================================
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from minippo.utils import check_range, shifted_seed

__all__ = ["Transition", "CartPole", "Pendulum", "Bandit", "ChainMDP", "GymVecEnv"]


class Transition(NamedTuple):
    """What every environment's ``step`` returns (shapes for ``B`` environments).

    Where an episode did not end, ``final_obs`` equals ``obs`` (it may be the very same tensor)
    and ``episode_return`` / ``episode_length`` hold the running totals of the unfinished
    episode; read them only where ``terminated | truncated``.
    """

    obs: Tensor  #: (B, O) next observation; ALREADY RESET where the episode ended
    reward: Tensor  #: (B,) float32
    terminated: Tensor  #: (B,) bool: a real end (pole fell); do not bootstrap
    truncated: Tensor  #: (B,) bool: time limit; bootstrap from V(final_obs)
    final_obs: Tensor  #: (B, O) observation the step actually reached (== obs where not done)
    episode_return: Tensor  #: (B,) float32, return of the episode that just ended
    episode_length: Tensor  #: (B,) long, length of the episode that just ended


def _seed_from_torch() -> int:
    # seed=None draws from torch's global RNG, so ``mp.set_seed`` still makes runs repeatable.
    return int(torch.randint(0, 2**62, (1,)).item())


def _make_generator(seed: int | None, device) -> torch.Generator:
    # an explicit seed is shifted by MINIPPO_SEED_OFFSET; seed=None draws from the (shifted) global RNG
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    gen = torch.Generator(device=device)
    gen.manual_seed(_seed_from_torch() if seed is None else shifted_seed(seed))
    return gen


def _check_num_envs(num_envs) -> int:
    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
    return num_envs


def _check_max_steps(max_episode_steps, allow_none: bool):
    if max_episode_steps is None and allow_none:
        return None
    if (
        not isinstance(max_episode_steps, int)
        or isinstance(max_episode_steps, bool)
        or max_episode_steps < 1
    ):
        allowed = "an int >= 1" + (" or None" if allow_none else "")
        raise ValueError(f"max_episode_steps must be {allowed}, got {max_episode_steps!r}")
    return max_episode_steps


def _check_float(name: str, value, low, high) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    check_range(name, value, low, high)
    return float(value)


def _check_discrete_action(action, num_envs: int, num_actions: int) -> np.ndarray:
    """``action`` as a (B,) NumPy integer array, or a ``ValueError`` naming it.

    Written for speed (it runs on every CartPole step): no torch reductions, one NumPy pass.
    """
    if not isinstance(action, Tensor):
        action = torch.as_tensor(action)
    if action.shape != (num_envs,):
        raise ValueError(
            f"action must have shape ({num_envs},) (one action per environment), "
            f"got {tuple(action.shape)}"
        )
    if action.dtype == torch.bool or action.dtype.is_floating_point or action.is_complex():
        raise ValueError(
            f"action must be an integer tensor with values in {{0, ..., {num_actions - 1}}}, "
            f"got dtype {action.dtype}"
        )
    a = action.numpy() if action.device.type == "cpu" else action.cpu().numpy()
    # One comparison checks both ends: viewed as unsigned, negative values are huge.
    if (a.view(a.dtype.str.replace("i", "u")) >= num_actions).any():
        raise ValueError(
            f"action values must be in {{0, ..., {num_actions - 1}}}, "
            f"got values in [{a.min()}, {a.max()}]"
        )
    return a


# --------------------------------------------------------------------------------------------
# CartPole
# --------------------------------------------------------------------------------------------


class CartPole:
    r"""``B`` CartPole-v1 environments advanced by one array step, Gymnasium's exact dynamics.

    The cart-pole of Barto, Sutton & Anderson (1983), "Neuronlike adaptive elements that can
    solve difficult learning control problems", with the equations of motion and constants of
    Gymnasium 1.x ``CartPoleEnv`` (``gymnasium/envs/classic_control/cartpole.py``, itself from
    Sutton's ``pole.c``; derivation in Florian 2007, "Correct equations for the dynamics of the
    cart-pole system"). With force :math:`F = \pm 10` N (action 1 pushes right, 0 left),
    gravity :math:`g = 9.8`, cart mass :math:`m_c = 1`, pole mass :math:`m_p = 0.1`, half pole
    length :math:`l = 0.5`, :math:`M = m_c + m_p`:

    .. math::

        \text{temp} = \frac{F + m_p l \dot\theta^2 \sin\theta}{M}, \qquad
        \ddot\theta = \frac{g \sin\theta - \cos\theta\,\text{temp}}
                           {l\,\left(\tfrac43 - \tfrac{m_p \cos^2\theta}{M}\right)}, \qquad
        \ddot x = \text{temp} - \frac{m_p l\,\ddot\theta \cos\theta}{M},

    then one explicit Euler step of :math:`\tau = 0.02` s (positions use the *old*
    velocities): :math:`x \leftarrow x + \tau\dot x,\ \dot x \leftarrow \dot x + \tau\ddot x,\
    \theta \leftarrow \theta + \tau\dot\theta,\ \dot\theta \leftarrow \dot\theta + \tau\ddot\theta`.

    * Observation ``(x, x_dot, theta, theta_dot)`` as a float32 tensor; the state is kept in
      float64 like Gymnasium's, and the arithmetic is Gymnasium's, operation for operation.
    * Reward 1 on every step, the terminating one included.
    * ``terminated`` when :math:`|x| > 2.4` or :math:`|\theta| > 12°` after the step.
    * ``truncated`` when the episode's step count reaches ``max_episode_steps`` (500), exactly
      like Gymnasium's ``TimeLimit``: it is set on that step *even if the pole also fell*, so
      both flags can be true at once (``done = terminated | truncated``; bootstrapping code
      must look at ``terminated`` first).
    * Start states are uniform in :math:`[-0.05, 0.05)^4`, drawn from this env's own
      ``torch.Generator`` (``seed``), so one seed gives one sequence of episodes.
    * An episode's return equals its length (the reward is always 1).

    Used by Chapters 1-5 and by the speed benchmark. Inputs and outputs are torch tensors
    (CPU); the ~25 whole-batch operations of a step run on NumPy float64 arrays because at
    B <= a few hundred the per-call overhead dominates and NumPy's is lower: the same code
    written with torch ops measured 2.3x slower (73 vs 32 us per step at B=8). It also uses
    the very same ``np.cos``/``np.sin`` as Gymnasium.
    """

    obs_dim = 4
    num_actions = 2
    action_dim = None

    # Constants of Gymnasium's CartPoleEnv.__init__.
    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    total_mass = masspole + masscart
    length = 0.5  # half the pole's length
    polemass_length = masspole * length
    force_mag = 10.0
    tau = 0.02  # seconds per step
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(self, num_envs: int = 8, max_episode_steps: int = 500, seed: int | None = None):
        self.num_envs = _check_num_envs(num_envs)
        self.max_episode_steps = _check_max_steps(max_episode_steps, allow_none=False)
        self._force = np.array([-self.force_mag, self.force_mag])  # action 0: left, 1: right
        self._reward = np.ones(self.num_envs, dtype=np.float32)
        self._generator = _make_generator(seed, "cpu")
        self.reset()

    # -- state, settable for tests ------------------------------------------------------------
    # Internally the state is a (4, B) float64 array: its rows (x, x_dot, theta, theta_dot) are
    # contiguous, so splitting and re-stacking the four variables is cheap.

    @property
    def state(self) -> Tensor:
        """(B, 4) float64 state ``(x, x_dot, theta, theta_dot)``; a view, and assignable."""
        return torch.from_numpy(self._s.T)

    @state.setter
    def state(self, value) -> None:
        value = torch.as_tensor(value, dtype=torch.float64)
        if value.shape != (self.num_envs, 4):
            raise ValueError(
                f"state must have shape ({self.num_envs}, 4), got {tuple(value.shape)}"
            )
        self._s = np.ascontiguousarray(value.numpy().T)  # (4, B)

    @property
    def elapsed_steps(self) -> Tensor:
        """(B,) long: steps taken in each current episode (Gymnasium's ``_elapsed_steps``)."""
        return torch.from_numpy(self._elapsed)

    @elapsed_steps.setter
    def elapsed_steps(self, value) -> None:
        value = torch.as_tensor(value, dtype=torch.long)
        if value.shape != (self.num_envs,):
            raise ValueError(
                f"elapsed_steps must have shape ({self.num_envs},), got {tuple(value.shape)}"
            )
        self._elapsed = value.numpy().copy()

    # -- API ----------------------------------------------------------------------------------

    def _start_states(self) -> np.ndarray:
        # Gymnasium: np_random.uniform(low=-0.05, high=0.05, size=(4,)) = -0.05 + 0.1 * U[0, 1).
        u = torch.rand((4, self.num_envs), generator=self._generator, dtype=torch.float64)
        return u.numpy() * 0.1 - 0.05  # (4, B)

    @staticmethod
    def _obs(s: np.ndarray) -> Tensor:
        return torch.from_numpy(s.T.astype(np.float32, order="C"))  # (B, 4)

    def reset(self, seed: int | None = None) -> Tensor:
        """Start a new episode in every environment; returns the (B, 4) float32 observation.

        ``seed`` re-seeds this env's generator (the same seed gives the same start states).
        """
        if seed is not None:
            self._generator = _make_generator(seed, "cpu")
        self._s = self._start_states()  # (4, B) float64
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)  # (B,)
        return self._obs(self._s)

    def step(self, action: Tensor) -> Transition:
        """Advance all ``B`` environments by one step; ``action`` is (B,) long in {0, 1}."""
        a = _check_discrete_action(action, self.num_envs, 2)  # (B,) int array
        m, pml = self.total_mass, self.polemass_length
        _, x_dot, theta, theta_dot = self._s  # (B,) each; x enters only through the Euler step
        force = self._force[a]  # (B,) +-10 N
        cos, sin = np.cos(theta), np.sin(theta)  # (B,)
        # Gymnasium's expressions, in Gymnasium's order (so the float64 rounding is the same).
        temp = (force + pml * np.square(theta_dot) * sin) / m  # (B,)
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * np.square(cos) / m)
        )  # (B,)
        x_acc = temp - pml * theta_acc * cos / m  # (B,)
        # Explicit Euler: every variable moves by tau times its derivative at the OLD state.
        s = self._s + self.tau * np.array((x_dot, x_acc, theta_dot, theta_acc))  # (4, B)

        # |x| > 2.4 is exactly Gymnasium's "x < -2.4 or x > 2.4" (likewise for theta).
        terminated = (np.abs(s[0]) > self.x_threshold) | (
            np.abs(s[2]) > self.theta_threshold_radians
        )  # (B,)
        length = self._elapsed + 1  # (B,)
        truncated = length >= self.max_episode_steps  # (B,) as TimeLimit: even if terminated
        done = terminated | truncated  # (B,)

        final_obs = obs = self._obs(s)  # (B, 4)
        if done.any():  # same-step autoreset: the next episode starts in this very step
            s = np.where(done, self._start_states(), s)  # (4, B)
            obs = self._obs(s)
            self._elapsed = np.where(done, 0, length)
        else:
            self._elapsed = length.copy()  # never share memory with the returned tensor
        self._s = s
        return Transition(
            obs=obs,
            reward=torch.from_numpy(self._reward.copy()),
            terminated=torch.from_numpy(terminated),
            truncated=torch.from_numpy(truncated),
            final_obs=final_obs,
            episode_return=torch.from_numpy(length.astype(np.float32)),
            episode_length=torch.from_numpy(length),
        )

    def __repr__(self) -> str:
        return f"CartPole(num_envs={self.num_envs}, max_episode_steps={self.max_episode_steps})"


# --------------------------------------------------------------------------------------------
# Bandit
# --------------------------------------------------------------------------------------------


class Bandit:
    r"""A K-armed Gaussian bandit: arm :math:`a` pays :math:`r \sim \mathcal N(\mu_a, \sigma^2)`.

    The one-step problem of Chapter 1, where the policy gradient can be checked exactly:
    for a policy :math:`\pi_\theta` (a probability vector over arms) the objective is
    :math:`J(\theta) = \sum_a \pi_\theta(a)\,\mu_a` (:meth:`expected_reward`, differentiable,
    so ``torch.autograd`` gives the exact :math:`\nabla_\theta J`), while the score-function
    (REINFORCE) estimate :math:`\frac1N \sum_i r_i \nabla_\theta \log \pi_\theta(a_i)` uses only
    sampled arms and rewards from :meth:`pull` (Williams 1992; Sutton & Barto 2018, §2.8).

    ``means`` (K,) are the arm means :math:`\mu`, ``std`` the common noise :math:`\sigma`.
    """

    def __init__(self, means: Sequence[float] | Tensor, std: float = 1.0):
        means = torch.as_tensor(means, dtype=torch.float64).detach().clone()
        if means.dim() != 1 or len(means) < 1:
            raise ValueError(
                f"means must be a 1-D sequence of K >= 1 arm means, got shape {tuple(means.shape)}"
            )
        if not torch.isfinite(means).all():
            raise ValueError(f"means must be finite, got {means.tolist()}")
        if not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
            raise ValueError(f"std must be in [0, inf), got {std!r}")
        self.means = means  # (K,) float64
        self.std = float(std)
        self.num_actions = len(means)

    @property
    def optimal_action(self) -> int:
        """The arm with the highest mean."""
        return int(self.means.argmax())

    @property
    def optimal_value(self) -> float:
        r"""The best expected reward, :math:`\max_a \mu_a`."""
        return float(self.means.max())

    def pull(self, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Rewards for a batch of pulls: ``actions`` (N,) long -> (N,) float32 rewards."""
        actions = torch.as_tensor(actions)
        if actions.dim() != 1:
            raise ValueError(f"actions must have shape (N,), got {tuple(actions.shape)}")
        if actions.dtype == torch.bool or actions.dtype.is_floating_point:
            raise ValueError(f"actions must be an integer tensor, got dtype {actions.dtype}")
        if len(actions) and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(
                f"actions must be in {{0, ..., {self.num_actions - 1}}}, "
                f"got values in [{int(actions.min())}, {int(actions.max())}]"
            )
        noise = torch.randn(actions.shape, generator=generator)  # (N,)
        return self.means[actions].float() + self.std * noise  # (N,) float32

    def expected_reward(self, probs: Tensor) -> Tensor:
        r""":math:`J = \sum_a \pi(a) \mu_a` for ``probs`` (K,) -> scalar, or (N, K) -> (N,).

        Differentiable in ``probs``: backpropagating through it gives the exact gradient that
        the score-function estimator approximates.
        """
        if probs.shape[-1:] != (self.num_actions,) or probs.dim() > 2:
            raise ValueError(
                f"probs must have shape ({self.num_actions},) or (N, {self.num_actions}), "
                f"got {tuple(probs.shape)}"
            )
        return probs @ self.means.to(probs.dtype)  # () or (N,)

    def __repr__(self) -> str:
        return f"Bandit(means={self.means.tolist()}, std={self.std})"


# --------------------------------------------------------------------------------------------
# ChainMDP
# --------------------------------------------------------------------------------------------


class ChainMDP:
    r"""A small chain MDP whose values are known exactly; batched, with CartPole's step API.

    States ``0 .. S-1`` lie on a line; ``S-1`` (the right end) is the goal and the only
    terminal state. Action 1 moves right, action 0 moves left (the left wall keeps state 0 in
    place); with probability ``slip`` the move goes the other way. Rewards
    :math:`r(s, a, s')`:

    * ``goal_reward`` (1) for entering the goal, which ends the episode (``terminated``);
    * ``left_reward`` (0.05) for pushing left against the wall in state 0 -- a small, nearby
      payoff that tempts a short-sighted learner to stay left (by default going right is
      still better: from state 0, :math:`V = 0.52` for "always right" against 0.45 for
      "always left"), and gives the uniform policy a *negative* advantage for "right" in
      state 0, so the sign of the advantage changes along the chain;
    * ``step_reward`` (0) on every step, e.g. a negative value for a step cost;
    * plus zero-mean Gaussian noise of std ``reward_noise_std`` (0), which adds variance to
      sampled returns without changing any value.

    Episodes are **terminating and discounted**: the return is
    :math:`G_t = \sum_{k \ge 0} \gamma^k r_{t+k}` up to entering the goal, and
    :meth:`true_values` is exactly its expectation, :math:`V^\pi = (I - \gamma P_\pi)^{-1} R_\pi`
    on the non-terminal states (Bellman 1957; Sutton & Barto 2018, eq. 4.4), with
    :math:`V(\text{goal}) = 0`. An optional time limit (``max_episode_steps``, off by default)
    only *truncates*: it is not part of the state, so the true values ignore it and a
    truncated episode must be bootstrapped from :math:`V(s_{final})` -- the point of
    ``terminated`` vs ``truncated``. With ``slip > 0`` every policy reaches the goal with
    probability 1, so the values exist even for :math:`\gamma = 1`.

    Used in Chapter 2 to measure the bias and variance of n-step and GAE advantage estimates
    against :meth:`true_advantages` as :math:`\lambda` varies. Observations are one-hot,
    ``(B, S)`` float32 (the goal appears only in ``final_obs``). New episodes start from
    ``start_probs`` (S,), by default uniform over the non-terminal states; ``reset`` accepts
    a new start distribution (e.g. one-hot, to sample returns from one state).

    Exposed for exact computations: ``P`` (S, A, S) transition probabilities, ``R`` (S, A)
    expected rewards, ``reward_table`` (S, A, S) the mean of :math:`r(s, a, s')`, ``gamma``,
    ``terminal`` (S,) bool, ``start_probs`` (S,). All float64.
    """

    num_actions = 2
    action_dim = None

    def __init__(
        self,
        num_states: int = 7,
        num_envs: int = 8,
        gamma: float = 0.9,
        max_episode_steps: int | None = None,
        seed: int | None = None,
        *,
        slip: float = 0.1,
        goal_reward: float = 1.0,
        left_reward: float = 0.05,
        step_reward: float = 0.0,
        reward_noise_std: float = 0.0,
        start_probs: Sequence[float] | Tensor | None = None,
    ):
        if not isinstance(num_states, int) or isinstance(num_states, bool) or num_states < 2:
            raise ValueError(f"num_states must be an int >= 2, got {num_states!r}")
        self.num_envs = _check_num_envs(num_envs)
        self.max_episode_steps = _check_max_steps(max_episode_steps, allow_none=True)
        for name, value, low, high in [
            ("gamma", gamma, 0.0, 1.0),
            ("slip", slip, 0.0, 1.0),
            ("reward_noise_std", reward_noise_std, 0.0, None),
        ]:
            _check_float(name, value, low, high)
        for name, value in [
            ("goal_reward", goal_reward),
            ("left_reward", left_reward),
            ("step_reward", step_reward),
        ]:
            _check_float(name, value, None, None)
        S, A = num_states, 2
        self.num_states = self.obs_dim = S
        self.gamma = float(gamma)
        self.slip = float(slip)
        self.reward_noise_std = float(reward_noise_std)
        goal = S - 1

        P = torch.zeros(S, A, S, dtype=torch.float64)  # P[s, a, s']
        for s in range(goal):
            left, right = max(s - 1, 0), s + 1
            P[s, 0, left] += 1 - slip
            P[s, 0, right] += slip
            P[s, 1, right] += 1 - slip
            P[s, 1, left] += slip
        P[goal, :, goal] = 1.0  # absorbing; never stepped from (autoreset)
        r = torch.full((S, A, S), float(step_reward), dtype=torch.float64)  # r(s, a, s')
        r[:, :, goal] += goal_reward
        r[0, 0, :] += left_reward
        r[goal] = 0.0
        self.P = P  # (S, A, S)
        self.reward_table = r  # (S, A, S)
        self.R = (P * r).sum(-1)  # (S, A) expected reward E[r | s, a]
        self.terminal = torch.zeros(S, dtype=torch.bool)  # (S,)
        self.terminal[goal] = True
        self._cdf = P.cumsum(-1)  # (S, A, S) for inverse-CDF sampling of s'
        self._eye = torch.eye(S)  # one-hot observations
        self._generator = _make_generator(seed, "cpu")
        self.start_probs = self._check_start_probs(start_probs)
        self.reset()

    # -- validation helpers -------------------------------------------------------------------

    def _check_start_probs(self, start_probs) -> Tensor:
        S = self.num_states
        if start_probs is None:
            p = (~self.terminal).double()
            return p / p.sum()  # (S,)
        p = torch.as_tensor(start_probs, dtype=torch.float64).detach().clone()
        if p.shape != (S,):
            raise ValueError(f"start_probs must have shape ({S},), got {tuple(p.shape)}")
        if (p < 0).any() or abs(float(p.sum()) - 1) > 1e-6 or float(p[self.terminal].sum()) > 0:
            raise ValueError(
                "start_probs must be non-negative, sum to 1 and put no mass on the terminal "
                f"state {S - 1}, got {p.tolist()}"
            )
        return p

    def _check_policy(self, policy_probs: Tensor) -> Tensor:
        S, A = self.num_states, self.num_actions
        if not isinstance(policy_probs, Tensor):
            policy_probs = torch.as_tensor(policy_probs, dtype=torch.float64)
        if policy_probs.shape != (S, A):
            raise ValueError(
                f"policy_probs must have shape ({S}, {A}) (one row of action probabilities "
                f"per state), got {tuple(policy_probs.shape)}"
            )
        pi = policy_probs.to(torch.float64)
        live = ~self.terminal
        rows = pi.detach()[live]
        if (rows < 0).any() or ((rows.sum(-1) - 1).abs() > 1e-5).any():
            raise ValueError(
                "policy_probs rows (non-terminal states) must be non-negative and sum to 1, "
                f"got row sums {rows.sum(-1).tolist()}"
            )
        return pi

    # -- exact values -------------------------------------------------------------------------

    def true_values(self, policy_probs: Tensor) -> Tensor:
        r"""Exact :math:`V^\pi` (S,) by a linear solve of the Bellman equation.

        .. math::  V = R_\pi + \gamma P_\pi V \ \text{on non-terminal states}, \quad
                   V(\text{goal}) = 0, \qquad
                   R_\pi(s) = \sum_a \pi(a|s) R(s, a), \
                   P_\pi(s, s') = \sum_a \pi(a|s) P(s, a, s').

        (Sutton & Barto 2018, eq. 4.4; Chapter 2.) Differentiable in ``policy_probs`` (S, A),
        so autograd gives the exact policy gradient too. Returned in ``policy_probs``' dtype
        (computed in float64).
        """
        pi = self._check_policy(policy_probs)
        live = (~self.terminal).double()  # (S,)
        r_pi = (pi * self.R).sum(-1) * live  # (S,)
        p_pi = torch.einsum("sa,sat->st", pi, self.P) * live[:, None] * live[None, :]  # (S, S)
        eye = torch.eye(self.num_states, dtype=torch.float64)
        try:
            v = torch.linalg.solve(eye - self.gamma * p_pi, r_pi)  # (S,)
        except RuntimeError as err:  # singular: gamma = 1 and a policy that never ends
            raise ValueError(
                "true_values: I - gamma P_pi is singular (with gamma = 1 the policy must "
                "reach the goal with probability 1; use slip > 0 or gamma < 1)"
            ) from err
        return v.to(policy_probs.dtype) if policy_probs.dtype.is_floating_point else v

    def true_q_values(self, policy_probs: Tensor) -> Tensor:
        r"""Exact :math:`Q^\pi(s, a) = R(s, a) + \gamma \sum_{s'} P(s, a, s') V^\pi(s')`, (S, A).

        Zero in the terminal state (Chapter 2).
        """
        v = self.true_values(policy_probs).to(torch.float64)  # (S,)
        q = self.R + self.gamma * self.P @ v  # (S, A)
        q = q * (~self.terminal).double()[:, None]
        return q.to(policy_probs.dtype) if policy_probs.dtype.is_floating_point else q

    def true_advantages(self, policy_probs: Tensor) -> Tensor:
        r"""Exact :math:`A^\pi(s, a) = Q^\pi(s, a) - V^\pi(s)`, (S, A).

        :math:`\sum_a \pi(a|s) A^\pi(s, a) = 0` in every state (Chapter 2: the target that
        GAE estimates; Schulman et al. 2016, eq. 1).
        """
        q = self.true_q_values(policy_probs)  # (S, A)
        return q - self.true_values(policy_probs)[:, None]  # (S, A)

    # -- stepping -----------------------------------------------------------------------------

    @property
    def state(self) -> Tensor:
        """(B,) long: the current state of each environment; assignable."""
        return self._s

    @state.setter
    def state(self, value) -> None:
        value = torch.as_tensor(value, dtype=torch.long)
        if value.shape != (self.num_envs,) or (value < 0).any() or (value >= self.num_states).any():
            raise ValueError(
                f"state must have shape ({self.num_envs},) with values in "
                f"{{0, ..., {self.num_states - 1}}}, got {value.tolist()}"
            )
        self._s = value.clone()

    def _sample_start(self, n: int) -> Tensor:
        u = torch.rand(n, generator=self._generator, dtype=torch.float64)  # (B,)
        cdf = self.start_probs.cumsum(0)  # (S,)
        return (u[:, None] >= cdf).sum(-1).clamp_(max=self.num_states - 2)  # (B,)

    def reset(
        self, seed: int | None = None, start_probs: Sequence[float] | Tensor | None = None
    ) -> Tensor:
        """Start a new episode everywhere; returns (B, S) one-hot observations.

        ``start_probs`` (S,) replaces the start distribution, for this and every later
        (auto)reset; ``seed`` re-seeds the env's generator.
        """
        if seed is not None:
            self._generator = _make_generator(seed, "cpu")
        if start_probs is not None:
            self.start_probs = self._check_start_probs(start_probs)
        self._s = self._sample_start(self.num_envs)  # (B,)
        self._elapsed = torch.zeros(self.num_envs, dtype=torch.long)  # (B,)
        self._return = torch.zeros(self.num_envs)  # (B,) float32
        return self._eye[self._s]

    def step(self, action: Tensor) -> Transition:
        """Advance all environments; ``action`` (B,) long, 0 = left, 1 = right."""
        action = torch.from_numpy(_check_discrete_action(action, self.num_envs, 2)).long()
        s = self._s  # (B,)
        u = torch.rand(self.num_envs, generator=self._generator, dtype=torch.float64)  # (B,)
        s_next = (u[:, None] >= self._cdf[s, action]).sum(-1)  # (B,) inverse CDF
        s_next = s_next.clamp_(max=self.num_states - 1)  # guard against cdf[-1] = 1 - 1e-16
        reward = self.reward_table[s, action, s_next].float()  # (B,)
        if self.reward_noise_std > 0:
            reward += self.reward_noise_std * torch.randn(self.num_envs, generator=self._generator)
        terminated = self.terminal[s_next]  # (B,)
        length = self._elapsed + 1  # (B,)
        if self.max_episode_steps is None:
            truncated = torch.zeros(self.num_envs, dtype=torch.bool)
        else:
            truncated = length >= self.max_episode_steps  # (B,) even if terminated, as TimeLimit
        done = terminated | truncated  # (B,)
        ret = self._return + reward  # (B,)

        final_obs = obs = self._eye[s_next]  # (B, S)
        if done.any():  # same-step autoreset
            s_next = torch.where(done, self._sample_start(self.num_envs), s_next)
            obs = self._eye[s_next]
        self._s = s_next
        self._elapsed = length.masked_fill(done, 0)
        self._return = ret.masked_fill(done, 0.0)
        return Transition(obs, reward, terminated, truncated, final_obs, ret, length)

    def __repr__(self) -> str:
        return (
            f"ChainMDP(num_states={self.num_states}, num_envs={self.num_envs}, "
            f"gamma={self.gamma}, slip={self.slip})"
        )


# --------------------------------------------------------------------------------------------
# Gymnasium adapter
# --------------------------------------------------------------------------------------------


class GymVecEnv:
    """Any Gymnasium vector env behind this module's API: torch in, :class:`Transition` out.

    ``GymVecEnv("Pendulum-v1", num_envs=8, seed=0)`` builds a ``SyncVectorEnv`` in Gymnasium's
    same-step autoreset mode (``AutoresetMode.SAME_STEP``: a finished sub-env is reset inside
    the step and its last observation is returned in ``infos["final_obs"]``), so
    ``obs``/``final_obs``/``terminated``/``truncated`` mean exactly what they mean for
    :class:`CartPole`. Or pass ``env=`` an existing vector env created in that mode.

    * Discrete actions: ``action`` (B,) integer; ``num_actions`` set, ``action_dim`` None.
    * Box actions: ``action`` (B, A) float, clipped to ``[action_low, action_high]`` before it
      reaches the env (a Gaussian policy samples outside the bounds; the log-probability
      keeps using the unclipped sample, as in SB3 and CleanRL); ``action_dim`` set,
      ``num_actions`` None.
    * Observations are flattened to (B, O) float32; episode returns and lengths are tracked
      here (float32 / long), like in :class:`CartPole`.

    No chapter trains on it (the chapters use the batched torch environments above, which are
    faster); chapter 4's section on bounded actions names its clipping, and it is the reader's
    way to run the package's PPO on any other Gymnasium task. ``tests/test_envs.py`` checks it
    against Gymnasium's own environments. Gymnasium is imported only when this class is used,
    so ``import minippo`` does not need it.
    """

    def __init__(
        self,
        env_id: str | None = None,
        num_envs: int = 8,
        seed: int | None = None,
        env=None,
        **make_kwargs,
    ):
        try:
            import gymnasium as gym
            from gymnasium.vector import AutoresetMode
        except ImportError as err:
            raise ImportError(
                "GymVecEnv needs Gymnasium >= 1.0: pip install 'gymnasium>=1.0' "
                "(or pip install 'minippo[gym]')"
            ) from err

        if (env_id is None) == (env is None):
            raise ValueError("pass exactly one of env_id (a Gymnasium id) and env (a vector env)")
        if env is None:
            if not isinstance(env_id, str):
                raise ValueError(f"env_id must be a Gymnasium id string, got {env_id!r}")
            _check_num_envs(num_envs)
            env = gym.make_vec(
                env_id,
                num_envs=num_envs,
                vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                **make_kwargs,
            )
        elif not isinstance(env, gym.vector.VectorEnv):
            raise ValueError(f"env must be a gymnasium.vector.VectorEnv, got {type(env).__name__}")
        mode = env.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"env must use autoreset_mode=AutoresetMode.SAME_STEP (so final observations "
                f"come in the same step), got {mode}"
            )
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.env = env
        self.num_envs = env.num_envs
        obs_space, act_space = env.single_observation_space, env.single_action_space
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"only Box observation spaces are supported, got {obs_space}")
        self.obs_dim = int(math.prod(obs_space.shape))
        if isinstance(act_space, gym.spaces.Discrete):
            self.num_actions, self.action_dim = int(act_space.n), None
            self._action_start = int(act_space.start)
            self.action_low = self.action_high = None
        elif isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
            self.num_actions, self.action_dim = None, int(act_space.shape[0])
            self.action_low = torch.as_tensor(act_space.low, dtype=torch.float32)  # (A,)
            self.action_high = torch.as_tensor(act_space.high, dtype=torch.float32)  # (A,)
            self._action_dtype = act_space.dtype
        else:
            raise ValueError(
                f"only Discrete and 1-D Box action spaces are supported, got {act_space}"
            )
        self._seed = _seed_from_torch() % 2**31 if seed is None else seed
        self.reset(self._seed)

    def _obs(self, obs) -> Tensor:
        return torch.from_numpy(np.array(obs, dtype=np.float32).reshape(self.num_envs, -1))

    def reset(self, seed: int | None = None) -> Tensor:
        """Reset every sub-env (sub-env ``i`` gets ``seed + i``); returns (B, O) float32."""
        obs, _ = self.env.reset(seed=None if seed is None else shifted_seed(seed))
        self._return = np.zeros(self.num_envs, dtype=np.float64)  # (B,)
        self._length = np.zeros(self.num_envs, dtype=np.int64)  # (B,)
        return self._obs(obs)

    def _to_env_action(self, action) -> np.ndarray:
        if not isinstance(action, Tensor):
            action = torch.as_tensor(action)
        B = self.num_envs
        if self.action_dim is None:
            a = _check_discrete_action(action, B, self.num_actions)  # (B,)
            return a.astype(np.int64) + self._action_start
        if action.shape != (B, self.action_dim):
            raise ValueError(
                f"action must have shape ({B}, {self.action_dim}), got {tuple(action.shape)}"
            )
        if not action.dtype.is_floating_point:
            raise ValueError(f"action must be a floating-point tensor, got dtype {action.dtype}")
        a = action.detach().cpu().float()
        if not torch.isfinite(a).all():
            raise ValueError("action must be finite (got NaN or inf)")
        a = torch.maximum(torch.minimum(a, self.action_high), self.action_low)  # (B, A) clip
        return a.numpy().astype(self._action_dtype)

    def step(self, action: Tensor) -> Transition:
        """Step every sub-env; ``action`` (B,) long (discrete) or (B, A) float (Box)."""
        obs, reward, terminated, truncated, infos = self.env.step(self._to_env_action(action))
        reward = np.asarray(reward, dtype=np.float64)  # (B,)
        done = np.logical_or(terminated, truncated)  # (B,)
        self._return += reward
        self._length += 1
        ret, length = self._return.copy(), self._length.copy()
        self._return[done] = 0.0
        self._length[done] = 0

        obs = self._obs(obs)  # (B, O), already reset where done
        final_obs = obs
        if done.any():
            final_obs = obs.clone()
            has_final = infos.get("_final_obs", done)
            for i in np.flatnonzero(has_final):
                final_obs[i] = torch.as_tensor(
                    np.asarray(infos["final_obs"][i], dtype=np.float32).reshape(-1)
                )
        return Transition(
            obs=obs,
            reward=torch.as_tensor(reward, dtype=torch.float32),
            terminated=torch.as_tensor(np.asarray(terminated, dtype=bool)),
            truncated=torch.as_tensor(np.asarray(truncated, dtype=bool)),
            final_obs=final_obs,
            episode_return=torch.as_tensor(ret, dtype=torch.float32),
            episode_length=torch.as_tensor(length),
        )

    def close(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"GymVecEnv({self.env!r})"


# --------------------------------------------------------------------------------------------
# Pendulum
# --------------------------------------------------------------------------------------------


class Pendulum:
    r"""``B`` Pendulum-v1 environments advanced by one array step, Gymnasium's exact dynamics.

    The torque-limited inverted-pendulum swing-up of Gymnasium 1.x ``PendulumEnv``
    (``gymnasium/envs/classic_control/pendulum.py``): a rod of mass :math:`m = 1` and length
    :math:`l = 1` under gravity :math:`g = 10`, angle :math:`\theta` (0 = upright), torque
    :math:`u = \mathrm{clip}(a, -2, 2)`, time step :math:`\Delta t = 0.05` s:

    .. math::

        \dot\theta' = \mathrm{clip}\Big(\dot\theta + \big(\tfrac{3g}{2l}\sin\theta
            + \tfrac{3}{ml^2}u\big)\Delta t,\ -8,\ 8\Big), \qquad
        \theta' = \theta + \dot\theta'\,\Delta t,

        r = -\big(\mathrm{norm}(\theta)^2 + 0.1\,\dot\theta^2 + 0.001\,u^2\big),

    with :math:`\mathrm{norm}(\theta) \in [-\pi, \pi)` and the reward computed on the state
    *before* the step, as Gymnasium does.

    * Observation :math:`(\cos\theta, \sin\theta, \dot\theta)` as float32; the state is kept in
      float64 and the arithmetic is Gymnasium's, operation for operation (a test checks it
      step by step against ``gymnasium.make("Pendulum-v1")``).
    * Action (B, 1) float; clipped to :math:`[-2, 2]` here, as Gymnasium clips it.
    * Never ``terminated``; ``truncated`` after ``max_episode_steps`` (200) steps, like
      Gymnasium's ``TimeLimit``.  Every return lies in :math:`[-16.27 \cdot 200, 0]`; a
      policy that holds the pendulum up from any start scores about -150, a random one about
      -1200.
    * Start states uniform in :math:`[-\pi, \pi) \times [-1, 1)` from this env's own
      ``torch.Generator`` (``seed``).

    Chapter 4, "Continuous actions".  Gymnasium's own Pendulum through :class:`GymVecEnv` gives
    the same episodes more slowly (one Python ``step`` per sub-environment).
    """

    obs_dim = 3
    num_actions = None
    action_dim = 1

    # Constants of Gymnasium's PendulumEnv.__init__ (default g = 10).
    max_speed = 8.0
    max_torque = 2.0
    dt = 0.05
    g = 10.0
    m = 1.0
    l = 1.0  # noqa: E741 (Gymnasium's name)

    def __init__(self, num_envs: int = 8, max_episode_steps: int = 200, seed: int | None = None):
        self.num_envs = _check_num_envs(num_envs)
        self.max_episode_steps = _check_max_steps(max_episode_steps, allow_none=False)
        self.action_low = torch.tensor([-self.max_torque])  # (A,)
        self.action_high = torch.tensor([self.max_torque])  # (A,)
        self._generator = _make_generator(seed, "cpu")
        self.reset()

    @property
    def state(self) -> Tensor:
        """(B, 2) float64 state ``(theta, theta_dot)``; assignable (for tests)."""
        return torch.from_numpy(self._s.T.copy())

    @state.setter
    def state(self, value) -> None:
        value = torch.as_tensor(value, dtype=torch.float64)
        if value.shape != (self.num_envs, 2):
            raise ValueError(f"state must have shape ({self.num_envs}, 2), got {tuple(value.shape)}")
        self._s = np.ascontiguousarray(value.numpy().T)  # (2, B)

    def _start_states(self) -> np.ndarray:
        # Gymnasium: np_random.uniform(low=-(pi, 1), high=(pi, 1)) = low + (high - low) * U[0, 1).
        u = torch.rand((2, self.num_envs), generator=self._generator, dtype=torch.float64).numpy()
        high = np.array([[np.pi], [1.0]])  # (2, 1)
        return -high + 2 * high * u  # (2, B)

    @staticmethod
    def _obs(s: np.ndarray) -> Tensor:
        th, thdot = s
        return torch.from_numpy(np.stack([np.cos(th), np.sin(th), thdot], 1).astype(np.float32))

    def reset(self, seed: int | None = None) -> Tensor:
        """Start a new episode in every environment; returns the (B, 3) float32 observation."""
        if seed is not None:
            self._generator = _make_generator(seed, "cpu")
        self._s = self._start_states()  # (2, B) float64
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)  # (B,)
        self._return = np.zeros(self.num_envs, dtype=np.float64)  # (B,)
        return self._obs(self._s)

    def step(self, action: Tensor) -> Transition:
        """Advance all ``B`` environments by one step; ``action`` is (B, 1) float."""
        if not isinstance(action, Tensor):
            action = torch.as_tensor(action)
        if action.shape != (self.num_envs, 1) or not action.dtype.is_floating_point:
            raise ValueError(f"action must be a float tensor of shape ({self.num_envs}, 1), got "
                             f"{tuple(action.shape)} {action.dtype}")
        # Gymnasium receives a float32 action and clips it in float32.
        u = np.clip(action.detach().numpy()[:, 0].astype(np.float32), -self.max_torque,
                    self.max_torque)  # (B,)
        if not np.isfinite(u).all():
            raise ValueError("action must be finite (got NaN or inf)")
        th, thdot = self._s  # (B,) each
        # Gymnasium's expressions, in Gymnasium's order (so the float64 rounding is the same).
        costs = (((th + np.pi) % (2 * np.pi)) - np.pi) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)
        newthdot = thdot + (3 * self.g / (2 * self.l) * np.sin(th) + 3.0 / (self.m * self.l**2) * u) * self.dt
        newthdot = np.clip(newthdot, -self.max_speed, self.max_speed)  # (B,)
        newth = th + newthdot * self.dt  # (B,)
        s = np.stack([newth, newthdot])  # (2, B)
        reward = -costs  # (B,) float64
        self._return += reward
        length = self._elapsed + 1  # (B,)
        ret = self._return.astype(np.float32)
        truncated = length >= self.max_episode_steps  # (B,)
        terminated = np.zeros(self.num_envs, dtype=bool)
        final_obs = obs = self._obs(s)
        if truncated.any():  # same-step autoreset
            s = np.where(truncated, self._start_states(), s)
            obs = self._obs(s)
            self._elapsed = np.where(truncated, 0, length)
            self._return = np.where(truncated, 0.0, self._return)
        else:
            self._elapsed = length
        self._s = s
        return Transition(
            obs=obs,
            reward=torch.from_numpy(reward.astype(np.float32)),
            terminated=torch.from_numpy(terminated),
            truncated=torch.from_numpy(truncated),
            final_obs=final_obs,
            episode_return=torch.from_numpy(ret),
            episode_length=torch.from_numpy(length),
        )

    def __repr__(self) -> str:
        return f"Pendulum(num_envs={self.num_envs}, max_episode_steps={self.max_episode_steps})"
