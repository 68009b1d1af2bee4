"""The actor-critic network every CartPole-to-Pendulum chapter trains.

Two separate MLPs (no shared torso, as in the PPO paper's MuJoCo setup and CleanRL's ppo.py):
the *actor* maps an observation to the parameters of the policy pi(a|s), the *critic* maps it to
a value estimate V(s).  Discrete actions use a Categorical head (logits); continuous actions use a
diagonal Gaussian whose mean comes from the actor and whose log standard deviation is a free,
state-independent parameter (Schulman et al. 2017, Section 6.1; Chapter 1, policy gradient).

Shapes: B batch of observations, O observation size, A number of actions (discrete) or action
dimension (continuous), D hidden width.

What the rest of the package asks of an agent is written down once, in :class:`Agent` (the way
Spinning Up documents its actor-critic): :func:`minippo.rollout.collect` calls ``sample`` and
``value``, the update diagnostics call ``policy_terms``.  :class:`ActorCritic` is the book's
agent; a reader's own network works anywhere it has these three methods.
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

__all__ = ["Agent", "layer_init", "mlp", "ActorCritic"]


class Agent(Protocol):
    """The actor-critic interface that rollout collection and the diagnostics rely on.

    ``obs`` is a batch of observations (B, O) or (N, O); ``action`` is (B,) long for a discrete
    policy, (B, A) float for a continuous one.
    """

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Draw ``a ~ pi(.|s)`` without gradients: ``(action (B,) or (B, A), logp (B,))``."""

    def value(self, obs: Tensor) -> Tensor:
        """``V(s)``: (N, O) -> (N,)."""

    def policy_terms(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """``(log pi(a|s) (N,), entropy of pi(.|s) (N,))``, with gradients."""


def layer_init(layer: nn.Linear, std: float = 2 ** 0.5, bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain ``std`` and a constant bias, in place; returns ``layer``.

    Gains follow the OpenAI baselines PPO code (Engstrom et al. 2020, "Implementation matters in
    deep policy gradients", item 2; Huang et al. 2022, "The 37 implementation details of PPO",
    detail 2): sqrt(2) for hidden layers, 0.01 for the policy output (so the initial policy is
    close to uniform), 1 for the value output.  Chapter 5, PPO in practice.
    """
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation=nn.Tanh,
        orthogonal_init: bool = True, out_std: float = 1.0) -> nn.Sequential:
    """``in_dim -> hidden[0] -> ... -> out_dim`` with ``activation`` between layers.

    With ``orthogonal_init`` hidden layers get gain sqrt(2) and the last layer gain ``out_std``;
    without it, PyTorch's default (Kaiming-uniform) initialisation is kept.
    """
    sizes = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        linear = nn.Linear(n_in, n_out)
        if orthogonal_init:
            layer_init(linear, std=out_std if last else math.sqrt(2))
        layers.append(linear)
        if not last:
            layers.append(activation())
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate policy and value MLPs; a Categorical or diagonal-Gaussian policy head.

    Give exactly one of ``num_actions`` (discrete actions ``0..A-1``) or ``action_dim``
    (continuous actions in R^A).  ``log_prob`` and ``entropy`` of a Gaussian are summed over the
    action dimensions, so every algorithm sees one number per sample.
    """

    def __init__(self, obs_dim: int, num_actions: int | None = None, action_dim: int | None = None,
                 hidden: Sequence[int] = (64, 64), activation=nn.Tanh, orthogonal_init: bool = True,
                 log_std_init: float = 0.0):
        super().__init__()
        if (num_actions is None) == (action_dim is None):
            raise ValueError("give exactly one of num_actions (discrete) or action_dim "
                             f"(continuous), got num_actions={num_actions!r}, "
                             f"action_dim={action_dim!r}")
        sizes = (("obs_dim", obs_dim), ("num_actions", num_actions), ("action_dim", action_dim))
        for name, n in sizes:
            if n is not None and (not isinstance(n, int) or n < 1):
                raise ValueError(f"{name} must be a positive int, got {n!r}")
        if len(hidden) == 0 or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive ints, "
                             f"got {hidden!r}")
        self.obs_dim = obs_dim
        self.num_actions = num_actions
        self.action_dim = action_dim
        self.discrete = num_actions is not None
        out = num_actions if self.discrete else action_dim
        # Small policy-output gain: near-uniform (or near-zero-mean) initial policy.
        self.actor = mlp(obs_dim, hidden, out, activation, orthogonal_init, out_std=0.01)
        self.critic = mlp(obs_dim, hidden, 1, activation, orthogonal_init, out_std=1.0)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    @classmethod
    def from_env(cls, env, **kwargs) -> "ActorCritic":
        """The network that fits ``env`` (its ``obs_dim`` and ``num_actions``/``action_dim``)."""
        num_actions = getattr(env, "num_actions", None)
        action_dim = None if num_actions is not None else getattr(env, "action_dim", None)
        return cls(env.obs_dim, num_actions=num_actions, action_dim=action_dim, **kwargs)

    def policy_parameters(self) -> list[nn.Parameter]:
        """The parameters of pi only (actor, plus ``log_std`` for a Gaussian): what TRPO steps."""
        params = list(self.actor.parameters())
        if not self.discrete:
            params.append(self.log_std)
        return params

    def value_parameters(self) -> list[nn.Parameter]:
        """The parameters of V only."""
        return list(self.critic.parameters())

    def _head(self, out: Tensor) -> Distribution:
        """pi(.|s) from the actor's output ``out`` (B, A): logits or Gaussian means."""
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        std = self.log_std.exp().expand_as(out)  # (B, A)
        return Independent(Normal(out, std, validate_args=False), 1, validate_args=False)

    def dist(self, obs: Tensor) -> Distribution:
        """pi(.|s) for a batch of observations ``obs`` (B, O)."""
        return self._head(self.actor(obs))

    def value(self, obs: Tensor) -> Tensor:
        """V(s) for ``obs`` (B, O) -> (B,)."""
        return self.critic(obs).squeeze(-1)  # (B,)

    @torch.no_grad()
    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Sample a ~ pi(.|s) without gradients: ``(action, logp)``.

        ``action`` is (B,) long for discrete policies and (B, A) for Gaussian ones (unclipped:
        the environment adapter clips what the simulator receives, and logp stays that of the
        sample, as in SB3 and CleanRL); ``logp`` is (B,).
        This runs once per environment step, so it calls each layer's ``forward`` directly
        (skipping ``nn.Module.__call__``'s hook machinery) and samples a categorical action with
        the Gumbel-max trick, argmax(log pi + G) with G ~ Gumbel(0, 1), which draws exactly from
        pi (Gumbel 1954; Maddison et al. 2014) without building a Distribution object.
        """
        out = _forward(self.actor, obs)  # (B, A)
        if self.discrete:
            logp_all = out.log_softmax(-1)  # (B, A)
            gumbel = -torch.empty_like(logp_all).exponential_().log()  # (B, A)
            action = (logp_all + gumbel).argmax(-1)  # (B,)
            return action, logp_all.gather(-1, action.unsqueeze(-1)).squeeze(-1)  # (B,), (B,)
        d = self._head(out)
        action = d.sample()  # (B, A)
        return action, d.log_prob(action)  # (B, A), (B,)

    @torch.no_grad()
    def act(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`sample` plus the value: ``(action, logp, value)``, no gradients.

        (:func:`minippo.rollout.collect` samples step by step and evaluates V for the whole
        rollout in one batched pass afterwards, which is cheaper.)
        """
        action, logp = self.sample(obs)
        return action, logp, _forward(self.critic, obs).squeeze(-1)  # (B,), (B,), (B,)

    def policy_terms(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """``(log pi(a|s), entropy of pi(.|s))`` with gradients, each (B,).

        For a categorical policy this is written out (log-softmax, gather, and
        H = -sum_a pi log pi) rather than built through ``torch.distributions.Categorical``:
        the same numbers with fewer tensor operations, which matters in the minibatch loop.
        """
        if not self.discrete:
            d = self.dist(obs)
            return d.log_prob(action), d.entropy()  # (B,), (B,)
        logp_all = self.actor(obs).log_softmax(-1)  # (B, A)
        logp = logp_all.gather(-1, action.unsqueeze(-1)).squeeze(-1)  # (B,)
        entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B,)
        return logp, entropy

    def evaluate(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(log pi(a|s), entropy of pi(.|s), V(s))`` with gradients, each (B,)."""
        logp, entropy = self.policy_terms(obs, action)
        return logp, entropy, self.value(obs)


def _forward(net: nn.Sequential, x: Tensor) -> Tensor:
    """``net(x)`` without the per-module ``__call__`` overhead (hooks are not run)."""
    for layer in net:
        x = layer.forward(x)
    return x

