r"""Running observation normalisation and reward scaling, as environment wrappers.

Chapter 4, "Continuous actions".  Two of the code-level choices that Engstrom et al. (2020,
"Implementation matters in deep policy gradients", Section 3) found to matter as much as the
clip, in the form OpenAI Baselines' ``VecNormalize``, CleanRL's ``ppo_continuous_action.py``
(Gymnasium's ``NormalizeObservation`` and ``NormalizeReward``) and Stable-Baselines3 use:

* :class:`NormalizeObservation`: :math:`\tilde s = \mathrm{clip}\big((s - m)/\sqrt{v +
  \varepsilon}, -10, 10\big)` with :math:`m, v` the running mean and variance of every
  observation seen so far (:class:`RunningMeanStd`), equation {eq}`ch04-obs-norm`;
* :class:`NormalizeReward`: :math:`\tilde r_t = \mathrm{clip}\big(r_t/\sqrt{\mathrm{Var}[G] +
  \varepsilon}, -10, 10\big)`, where :math:`G_t = \gamma G_{t-1} (1 - d_{t-1}) + r_t` is a
  running discounted return, equation {eq}`ch04-reward-scale`.  The reward is *divided*, not
  centred: subtracting a mean would change which behaviour is optimal (a constant per-step
  reward decides whether long episodes are good), dividing does not.

Both wrap any environment of :mod:`minippo.envs` and keep its API.  The episode statistics in
the :class:`~minippo.envs.Transition` (``episode_return``) are the *inner* environment's, so
the history and every plot report the true, unscaled return.  The statistics keep updating
while the agent trains (they are part of the environment the agent sees), and an agent
evaluated later must be given the same statistics (``obs_rms``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from minippo.envs import Transition
from minippo.utils import check_range

__all__ = ["RunningMeanStd", "NormalizeObservation", "NormalizeReward"]


class RunningMeanStd:
    r"""Mean and (population) variance of a stream of batches, merged batch by batch.

    Merging a batch of :math:`n_b` samples with mean :math:`m_b` and variance :math:`v_b` into
    :math:`(n, m, v)` (Chan, Golub & LeVeque 1979):

    .. math::

        \delta = m_b - m,\quad n' = n + n_b,\quad m' = m + \delta\,\frac{n_b}{n'},\quad
        v' = \frac{n v + n_b v_b + \delta^2\, n n_b / n'}{n'}.

    The count starts at ``epsilon`` (1e-4) with :math:`m = 0, v = 1`, as in Baselines and
    Gymnasium, so the first batch dominates without a division by zero.  float64 throughout.
    Chapter 4, "Continuous actions", equation {eq}`ch04-obs-norm`.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        check_range("epsilon", epsilon, 0.0, low_open=True)
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.var = torch.ones(shape, dtype=torch.float64)
        self.count = float(epsilon)

    def update(self, x: Tensor) -> None:
        """Merge the batch ``x`` (n, *shape): its first dimension indexes samples."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.shape[1:] != self.mean.shape:
            raise ValueError(f"x must have shape (n, {', '.join(map(str, self.mean.shape))}), "
                             f"got {tuple(x.shape)}")
        n_b = x.shape[0]
        if n_b == 0:
            return
        m_b, v_b = x.mean(0), x.var(0, unbiased=False)
        delta = m_b - self.mean
        total = self.count + n_b
        self.mean = self.mean + delta * n_b / total
        self.var = (self.var * self.count + v_b * n_b + delta.pow(2) * self.count * n_b / total) / total
        self.count = total


class _Wrapper:
    """Forward everything a wrapper does not change to the inner environment."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


class NormalizeObservation(_Wrapper):
    r"""Observations standardised by their running mean and variance, then clipped.

    .. math:: \tilde s = \mathrm{clip}\Big(\frac{s - m}{\sqrt{v + \varepsilon}}, -c, c\Big)

    with :math:`(m, v)` from :class:`RunningMeanStd`, updated with every batch of observations
    the environment returns (as Gymnasium's ``NormalizeObservation``); ``final_obs`` (the
    truncation bootstrap's input) is normalised with the same statistics as ``obs``.
    Chapter 4, "Continuous actions", equation {eq}`ch04-obs-norm`.  Set ``update=False`` to
    freeze the statistics (evaluation).
    """

    def __init__(self, env, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__(env)
        check_range("clip", clip, 0.0, low_open=True)
        check_range("epsilon", epsilon, 0.0, low_open=True)
        self.clip, self.epsilon, self.update = float(clip), float(epsilon), True
        self.obs_rms = RunningMeanStd((env.obs_dim,))

    def normalize(self, obs: Tensor) -> Tensor:
        """(B, O) raw observations -> (B, O) float32 normalised with the current statistics."""
        z = (obs.double() - self.obs_rms.mean) / torch.sqrt(self.obs_rms.var + self.epsilon)
        return z.clamp(-self.clip, self.clip).float()  # (B, O)

    def reset(self, seed: int | None = None) -> Tensor:
        obs = self.env.reset(seed=seed)  # (B, O)
        if self.update:
            self.obs_rms.update(obs)
        return self.normalize(obs)

    def step(self, action: Tensor) -> Transition:
        tr = self.env.step(action)
        if self.update:
            self.obs_rms.update(tr.obs)
        obs = self.normalize(tr.obs)  # (B, O)
        final_obs = obs if tr.final_obs is tr.obs else self.normalize(tr.final_obs)  # (B, O)
        return tr._replace(obs=obs, final_obs=final_obs)

    def __repr__(self) -> str:
        return f"NormalizeObservation({self.env!r})"


class NormalizeReward(_Wrapper):
    r"""Rewards divided by the running standard deviation of a discounted return, then clipped.

    .. math::

        G_t = \gamma\,G_{t-1}\,(1 - d_{t-1}) + r_t, \qquad
        \tilde r_t = \mathrm{clip}\Big(\frac{r_t}{\sqrt{\mathrm{Var}[G] + \varepsilon}}, -c, c\Big)

    with :math:`d_{t-1}` the end (terminated or truncated) of the previous step's episode and
    :math:`\mathrm{Var}[G]` the running variance (:class:`RunningMeanStd`) of every :math:`G_t`
    so far, this step's included (OpenAI Baselines' ``VecNormalize``; Gymnasium's
    ``NormalizeReward`` restarts :math:`G` on ``terminated`` only, which lets a truncated
    episode's return leak into the next one).  Dividing by the scale of the return keeps the
    value targets near unit size whatever the reward's units; Chapter 4, "Continuous actions",
    equation {eq}`ch04-reward-scale`.  ``episode_return`` stays the inner env's raw return.
    """

    def __init__(self, env, gamma: float = 0.99, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__(env)
        check_range("gamma", gamma, 0.0, 1.0)
        check_range("clip", clip, 0.0, low_open=True)
        check_range("epsilon", epsilon, 0.0, low_open=True)
        self.gamma, self.clip, self.epsilon, self.update = float(gamma), float(clip), float(epsilon), True
        self.return_rms = RunningMeanStd(())
        self.discounted_return = torch.zeros(env.num_envs, dtype=torch.float64)  # (B,)

    def reset(self, seed: int | None = None) -> Tensor:
        self.discounted_return = torch.zeros(self.env.num_envs, dtype=torch.float64)
        return self.env.reset(seed=seed)

    def step(self, action: Tensor) -> Transition:
        tr = self.env.step(action)
        g = self.discounted_return * self.gamma + tr.reward.double()  # (B,)
        if self.update:
            self.return_rms.update(g)
        self.discounted_return = torch.where(tr.terminated | tr.truncated, 0.0, g)  # (B,)
        scaled = tr.reward.double() / torch.sqrt(self.return_rms.var + self.epsilon)  # (B,)
        return tr._replace(reward=scaled.clamp(-self.clip, self.clip).float())

    def __repr__(self) -> str:
        return f"NormalizeReward({self.env!r}, gamma={self.gamma})"
