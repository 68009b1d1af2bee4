"""Environments with one batched API: CartPole, a bandit, a chain MDP and a Gymnasium adapter.

Every environment here (except the one-step :class:`Bandit`) runs ``B`` copies at once and
speaks the same language:

* ``obs = env.reset(seed=None)`` returns a ``(B, O)`` float32 tensor;
* ``tr = env.step(action)`` returns a :class:`Transition`;
* episodes reset themselves *in the same step* they end ("same-step autoreset"): ``tr.obs``
  is already the first observation of the next episode, and ``tr.final_obs`` is the
  observation the step actually reached;
* ``tr.terminated`` (a real end: no bootstrap) and ``tr.truncated`` (a time limit: bootstrap
  from :math:`V(s_{final})`) are kept apart (DESIGN.md; SB3 issue 633).

Who uses what:

=================  ===========================================================================
:class:`CartPole`   every control chapter (1-5): REINFORCE, A2C, TRPO, PPO and the benchmark
:class:`Bandit`     Chapter 1: the score-function gradient estimate against the exact gradient
:class:`ChainMDP`   Chapter 2: bias and variance of n-step / GAE advantages against the truth
:class:`GymVecEnv`  Chapter 5: PPO on any Gymnasium task (discrete or continuous actions)
=================  ===========================================================================
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Transition", "CartPole"]


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
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    gen = torch.Generator(device=device)
    gen.manual_seed(_seed_from_torch() if seed is None else seed)
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


def _check_discrete_action(action, num_envs: int, num_actions: int, device) -> Tensor:
    """Return ``action`` as a (B,) long tensor or raise ``ValueError`` naming it."""
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
    if action.device != device:
        action = action.to(device)
    lo, hi = (int(v) for v in torch.aminmax(action))
    if lo < 0 or hi >= num_actions:
        raise ValueError(
            f"action values must be in {{0, ..., {num_actions - 1}}}, got values in [{lo}, {hi}]"
        )
    return action


def _check_binary_action(action, num_envs: int) -> np.ndarray:
    """CartPole's fast path: ``action`` as a (B,) unsigned NumPy array, or ``ValueError``."""
    if not isinstance(action, Tensor):
        action = torch.as_tensor(action)
    if action.shape != (num_envs,):
        raise ValueError(
            f"action must have shape ({num_envs},) (one action per environment), "
            f"got {tuple(action.shape)}"
        )
    if action.dtype == torch.bool or action.dtype.is_floating_point or action.is_complex():
        raise ValueError(
            f"action must be an integer tensor with values in {{0, 1}}, got dtype {action.dtype}"
        )
    a = action.numpy() if action.device.type == "cpu" else action.cpu().numpy()
    # One comparison checks both ends: viewed as unsigned, negative values are huge.
    if (a.view(a.dtype.str.replace("i", "u")) > 1).any():
        raise ValueError(f"action values must be in {{0, 1}}, got values in [{a.min()}, {a.max()}]")
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
            raise ValueError(f"state must have shape ({self.num_envs}, 4), got {tuple(value.shape)}")
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
        a = _check_binary_action(action, self.num_envs)  # (B,) int array
        m, pml = self.total_mass, self.polemass_length
        x, x_dot, theta, theta_dot = self._s  # (B,) each
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
            self._elapsed = length
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
