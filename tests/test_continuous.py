"""Chapter 4, "Continuous actions": the batched Pendulum against Gymnasium, the Gaussian and
squashed-Gaussian log-densities and entropy against torch.distributions and autograd, and the
running normalisation wrappers against hand-computed references."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

import minippo as mp
from minippo import checks
from minippo.envs import Pendulum
from minippo.gaussian import (gaussian_entropy, gaussian_log_prob, tanh_gaussian_log_prob,
                              tanh_log_det_jacobian)
from minippo.nets import ActorCritic
from minippo.normalize import NormalizeObservation, NormalizeReward, RunningMeanStd

try:
    import gymnasium as gym
except ImportError:  # pragma: no cover
    gym = None
needs_gymnasium = pytest.mark.skipif(gym is None, reason="gymnasium is not installed")


# ------------------------------------------------------------------------------- Pendulum
@needs_gymnasium
@pytest.mark.parametrize("scale", [0.5, 3.0])  # inside the torque bounds, and mostly clipped
def test_pendulum_matches_gymnasium_step_by_step(scale):
    B = 3
    env = Pendulum(B, seed=0)
    refs = [gym.make("Pendulum-v1") for _ in range(B)]
    for i, ref in enumerate(refs):
        ref.reset(seed=i)
    env.state = np.array([ref.unwrapped.state for ref in refs])
    rng = np.random.default_rng(1)
    for t in range(450):  # two truncations at 200 steps
        a = (scale * rng.standard_normal((B, 1))).astype(np.float32)
        tr = env.step(torch.from_numpy(a))
        for i, ref in enumerate(refs):
            o, r, term, trunc, _ = ref.step(a[i])
            assert np.array_equal(tr.final_obs[i].numpy(), o), (t, i)
            assert np.float32(r) == tr.reward[i].item(), (t, i)
            assert bool(term) == bool(tr.terminated[i]) and bool(trunc) == bool(tr.truncated[i])
            if trunc:
                ref.reset(seed=100 + t)
        if tr.truncated.any():
            state = env.state.clone()
            for i in np.flatnonzero(tr.truncated.numpy()):
                state[i] = torch.as_tensor(refs[i].unwrapped.state)
            env.state = state


def test_pendulum_episodes_and_errors():
    env = Pendulum(4, seed=0, max_episode_steps=10)
    obs = env.reset(seed=3)
    assert obs.shape == (4, 3) and obs.dtype == torch.float32
    assert torch.allclose(obs[:, 0] ** 2 + obs[:, 1] ** 2, torch.ones(4))
    assert torch.equal(obs, Pendulum(4, seed=9).reset(seed=3))  # seeded starts
    total = torch.zeros(4, dtype=torch.float64)
    for t in range(10):
        tr = env.step(torch.full((4, 1), 5.0))  # clipped to 2 inside
        total += tr.reward.double()
        assert not tr.terminated.any()
        assert bool(tr.truncated.all()) == (t == 9)
        assert (tr.reward <= 0).all() and (tr.reward >= -(math.pi**2 + 0.1 * 64 + 0.004)).all()
    assert torch.allclose(tr.episode_return.double(), total, rtol=1e-5)
    assert torch.equal(tr.episode_length, torch.full((4,), 10))
    assert not torch.equal(tr.obs, tr.final_obs)  # autoreset in the same step
    with pytest.raises(ValueError, match="action"):
        env.step(torch.zeros(4))
    with pytest.raises(ValueError, match="action"):
        env.step(torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="finite"):
        env.step(torch.full((4, 1), float("nan")))
    with pytest.raises(ValueError, match="state"):
        env.state = torch.zeros(3, 2)


# ------------------------------------------------------------------------------- Gaussian
def test_gaussian_log_prob_and_entropy_match_torch_and_the_agent():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(7, 3, generator=g, dtype=torch.float64)
    log_std = torch.randn(3, generator=g, dtype=torch.float64)
    a = torch.randn(7, 3, generator=g, dtype=torch.float64) * 2
    ref = Independent(Normal(mean, log_std.exp()), 1)
    assert torch.allclose(gaussian_log_prob(a, mean, log_std), ref.log_prob(a))
    assert torch.allclose(gaussian_entropy(log_std), ref.entropy()[0])
    per_sample = torch.randn(7, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(gaussian_entropy(per_sample),
                          Independent(Normal(mean, per_sample.exp()), 1).entropy())
    agent = ActorCritic(5, action_dim=3)
    with torch.no_grad():
        agent.log_std.copy_(torch.tensor([0.3, -0.5, 0.1]))
    obs = torch.randn(7, 5, generator=g)
    act = torch.randn(7, 3, generator=g)
    logp, ent = agent.policy_terms(obs, act)
    mu = agent.actor(obs)
    assert torch.allclose(logp, gaussian_log_prob(act, mu, agent.log_std), atol=1e-5)
    assert torch.allclose(ent, gaussian_entropy(agent.log_std).expand(7), atol=1e-6)


def test_gaussian_log_prob_gradients_match_the_formula():
    # d/dmu log N = (a - mu) / sigma^2 ; d/dlog_sigma = z^2 - 1 (per dimension)
    mean = torch.tensor([[0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    log_std = torch.tensor([0.2, -0.3], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([[1.5, 0.0]], dtype=torch.float64)
    gaussian_log_prob(a, mean, log_std).sum().backward()
    sigma = log_std.detach().exp()
    z = (a - mean.detach()) / sigma
    assert torch.allclose(mean.grad, (a - mean.detach()) / sigma**2)
    assert torch.allclose(log_std.grad, (z**2 - 1).squeeze(0))


def test_tanh_log_prob_matches_torch_and_stays_finite():
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(9, 2, generator=g, dtype=torch.float64)
    log_std = 0.5 * torch.randn(2, generator=g, dtype=torch.float64)
    u = mean + log_std.exp() * torch.randn(9, 2, generator=g, dtype=torch.float64)
    ref = Independent(TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]), 1)
    assert torch.allclose(tanh_gaussian_log_prob(u, mean, log_std), ref.log_prob(torch.tanh(u)),
                          atol=1e-8)
    # the correction is log|det J| of tanh, from autograd's Jacobian
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(torch.tanh, x)
    assert torch.allclose(tanh_log_det_jacobian(x), torch.logdet(jac))
    # hand-computed: log(1 - tanh(0)^2) = 0
    assert tanh_log_det_jacobian(torch.zeros(1, 4)).item() == 0.0
    # far tails: the naive form is -inf, ours the asymptote 2 (log 2 - |u|)
    big = torch.tensor([[30.0], [-30.0]], dtype=torch.float32)
    assert torch.isinf(torch.log(1 - torch.tanh(big) ** 2)).all()
    assert torch.allclose(tanh_log_det_jacobian(big), 2 * (math.log(2) - 30.0) * torch.ones(2))


def test_gaussian_errors():
    with pytest.raises(ValueError, match="broadcast"):
        gaussian_log_prob(torch.zeros(3, 2), torch.zeros(3, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="log_std"):
        gaussian_entropy(torch.tensor(0.0))
    with pytest.raises(ValueError, match="u must"):
        tanh_log_det_jacobian(torch.tensor(0.0))


def test_check_tanh_gaussian_log_prob_accepts_reference_and_rejects_mistakes():
    assert checks.check_tanh_gaussian_log_prob(tanh_gaussian_log_prob)

    def naive(u, mean, log_std):
        return gaussian_log_prob(u, mean, log_std) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)

    def no_correction(u, mean, log_std):
        return gaussian_log_prob(u, mean, log_std)

    def plus_sign(u, mean, log_std):
        return gaussian_log_prob(u, mean, log_std) + tanh_log_det_jacobian(u)

    for wrong, text in [(naive, "tails"), (no_correction, "case 0"), (plus_sign, "case 0")]:
        with pytest.raises(AssertionError, match=text):
            checks.check_tanh_gaussian_log_prob(wrong)


# ------------------------------------------------------------------------------- normalisation
def test_running_mean_std_merges_batches_exactly():
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(n, 3, generator=g, dtype=torch.float64) * 4 + 1 for n in (1, 5, 17)]
    rms = RunningMeanStd((3,), epsilon=1e-12)
    for b in batches:
        rms.update(b)
    data = torch.cat(batches)
    assert torch.allclose(rms.mean, data.mean(0))
    assert torch.allclose(rms.var, data.var(0, unbiased=False))
    assert rms.count == pytest.approx(23)
    with pytest.raises(ValueError, match="x must"):
        rms.update(torch.zeros(4, 2))


@needs_gymnasium
def test_running_mean_std_matches_gymnasium():
    from gymnasium.wrappers.utils import RunningMeanStd as GymRMS
    g = torch.Generator().manual_seed(3)
    ours, theirs = RunningMeanStd((2,)), GymRMS(shape=(2,))
    for n in (3, 8, 1):
        x = torch.randn(n, 2, generator=g, dtype=torch.float64) * 3 - 2
        ours.update(x)
        theirs.update(x.numpy())
    assert np.allclose(ours.mean.numpy(), theirs.mean) and np.allclose(ours.var.numpy(), theirs.var)
    assert ours.count == pytest.approx(theirs.count)


def test_normalize_observation_uses_every_observation_seen():
    env = NormalizeObservation(Pendulum(4, seed=0, max_episode_steps=5))
    raw_env = Pendulum(4, seed=0, max_episode_steps=5)
    env.obs_rms = RunningMeanStd((3,), epsilon=1e-12)  # no prior: the plain mean and variance
    seen = [raw_env.reset()]
    env.reset()
    for _ in range(7):  # crosses a truncation
        a = torch.full((4, 1), 1.0)
        tr, raw = env.step(a), raw_env.step(a)
        seen.append(raw.obs)
        data = torch.cat(seen).double()
        m, v = data.mean(0), data.var(0, unbiased=False)
        expect = ((raw.obs.double() - m) / torch.sqrt(v + 1e-8)).clamp(-10, 10).float()
        assert torch.allclose(tr.obs, expect, atol=1e-4)
        expect_final = ((raw.final_obs.double() - m) / torch.sqrt(v + 1e-8)).clamp(-10, 10).float()
        assert torch.allclose(tr.final_obs, expect_final, atol=1e-4)
        assert torch.equal(tr.episode_return, raw.episode_return)  # raw returns for the history
    assert env.obs_dim == 3 and env.action_dim == 1 and env.num_envs == 4


def test_normalize_reward_divides_by_the_std_of_the_discounted_return():
    gamma, B = 0.9, 3
    env = NormalizeReward(Pendulum(B, seed=0, max_episode_steps=4), gamma=gamma)
    raw_env = Pendulum(B, seed=0, max_episode_steps=4)
    env.return_rms = RunningMeanStd((), epsilon=1e-12)
    env.reset(), raw_env.reset()
    G, returns = np.zeros(B), []
    for t in range(9):
        a = torch.full((B, 1), -0.5)
        tr, raw = env.step(a), raw_env.step(a)
        G = gamma * G + raw.reward.double().numpy()
        returns.append(G.copy())
        var = np.var(np.concatenate(returns))
        assert np.allclose(tr.reward.numpy(), raw.reward.numpy() / np.sqrt(var + 1e-8),
                           rtol=1e-3, atol=1e-5)
        G[(raw.terminated | raw.truncated).numpy()] = 0.0
        assert torch.equal(tr.episode_return, raw.episode_return)
    with pytest.raises(ValueError, match="gamma"):
        NormalizeReward(Pendulum(1), gamma=1.5)


def test_ppo_learns_pendulum_with_normalisation():
    import dataclasses
    torch.set_num_threads(1)  # as the chapters; several threads are slower on a small CPU
    cfg = mp.ppo.PENDULUM
    env = NormalizeReward(NormalizeObservation(Pendulum(cfg.num_envs, seed=0)), gamma=cfg.gamma)
    _, hist = mp.ppo.train(cfg, env, seed=0, progress=False)
    first = np.mean(hist.episodes["return"][:16])
    last = np.mean(hist.episodes["return"][-16:])
    assert last > first + 400, (first, last)
