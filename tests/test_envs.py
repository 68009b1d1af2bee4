"""Tests of minippo.envs: CartPole against Gymnasium step by step, and the other envs' contracts."""
import math

import numpy as np
import pytest
import torch

import minippo as mp
from minippo.envs import CartPole, Transition

torch.set_num_threads(1)

gym = pytest.importorskip("gymnasium")

THETA_LIMIT = 12 * 2 * math.pi / 360


# ---------------------------------------------------------------------------------------------
# CartPole against Gymnasium's CartPole-v1
# ---------------------------------------------------------------------------------------------


def _sync_gym(gyms, env, i):
    """Start gym env ``i`` in our env's current episode: same state, same elapsed steps."""
    gyms[i].reset()
    gyms[i].unwrapped.state = env.state[i].numpy().copy()
    gyms[i]._elapsed_steps = int(env.elapsed_steps[i])  # TimeLimit is the outermost wrapper


def _run_against_gym(env, policy, num_steps):
    """Step ``env`` and one ``gymnasium.make("CartPole-v1")`` per copy with the same actions.

    Checks states, rewards and both done flags every step, re-syncs a gym env after each
    autoreset, and returns how each finished episode ended.
    """
    gyms = [gym.make("CartPole-v1") for _ in range(env.num_envs)]
    for i in range(env.num_envs):
        _sync_gym(gyms, env, i)
    obs = env.state.float()
    endings = []
    for _ in range(num_steps):
        action = policy(obs)
        tr = env.step(action)
        for i, g in enumerate(gyms):
            o, r, term, trunc, _ = g.step(int(action[i]))
            assert tr.final_obs[i].tolist() == pytest.approx(o.tolist(), abs=1e-6)
            assert float(tr.reward[i]) == r == 1.0
            assert bool(tr.terminated[i]) == term
            assert bool(tr.truncated[i]) == trunc
            if term or trunc:
                x, theta = o[0], o[2]
                endings.append("time" if trunc else ("x" if abs(x) > 2.4 else "theta"))
                if term:
                    assert abs(x) > 2.4 or abs(theta) > THETA_LIMIT
                assert int(tr.episode_length[i]) == g._elapsed_steps
                _sync_gym(gyms, env, i)
            else:
                # Not done: the float64 states agree far below float32 resolution.
                np.testing.assert_allclose(env.state[i].numpy(), g.unwrapped.state, rtol=0, atol=1e-12)
                assert torch.equal(tr.obs[i], tr.final_obs[i])
        obs = tr.obs
    return endings


def _random_policy(seed):
    gen = torch.Generator().manual_seed(seed)
    return lambda obs: torch.randint(0, 2, (obs.shape[0],), generator=gen)


def _balance(obs, bias=0.0):
    # A linear controller that keeps the pole up for 500 steps (bias=0) or, with a small bias,
    # keeps it up while the cart drifts off the track.
    return (obs[:, 2] + 0.5 * obs[:, 3] + bias > 0).long()


def test_cartpole_matches_gymnasium_random_actions():
    """Random actions: many short episodes, ended by the pole angle (and sometimes x)."""
    env = CartPole(num_envs=6, seed=0)
    endings = _run_against_gym(env, _random_policy(1), 400)
    assert endings.count("theta") > 50


def test_cartpole_matches_gymnasium_position_termination():
    env = CartPole(num_envs=4, seed=1)
    endings = _run_against_gym(env, lambda o: _balance(o, bias=0.05), 400)
    assert endings.count("x") >= 4


def test_cartpole_matches_gymnasium_truncation_at_500():
    """A balancing controller: full 500-step episodes, truncated (not terminated) at 500."""
    env = CartPole(num_envs=3, seed=2)
    endings = _run_against_gym(env, _balance, 520)
    assert endings == ["time"] * 3


def test_cartpole_terminated_and_truncated_on_the_same_step_like_timelimit():
    """Pole falls on step 500: Gymnasium's TimeLimit reports BOTH flags; so do we."""
    env = CartPole(num_envs=2, seed=3)
    env.state = torch.tensor([[0.0, 0.0, 0.2, 2.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    env.elapsed_steps = torch.tensor([499, 499])
    gyms = [gym.make("CartPole-v1") for _ in range(2)]
    for i in range(2):
        _sync_gym(gyms, env, i)
    tr = env.step(torch.tensor([1, 1]))
    for i, g in enumerate(gyms):
        _, _, term, trunc, _ = g.step(1)
        assert (bool(tr.terminated[i]), bool(tr.truncated[i])) == (term, trunc)
    assert tr.terminated.tolist() == [True, False]
    assert tr.truncated.tolist() == [True, True]
    assert tr.episode_length.tolist() == [500, 500]


def test_cartpole_autoreset_and_episode_statistics():
    env = CartPole(num_envs=8, seed=4)
    policy = _random_policy(5)
    obs = env.reset()
    assert obs.shape == (8, 4) and obs.dtype == torch.float32
    assert obs.abs().max() <= 0.05
    lengths = torch.zeros(8, dtype=torch.long)
    finished = 0
    for _ in range(300):
        before = env.state.clone()
        tr = env.step(policy(obs))
        assert isinstance(tr, Transition)
        assert tr.reward.dtype == torch.float32 and tr.reward.shape == (8,)
        assert tr.terminated.dtype == torch.bool and tr.truncated.dtype == torch.bool
        assert tr.episode_length.dtype == torch.long and tr.episode_return.dtype == torch.float32
        lengths += 1
        done = tr.terminated | tr.truncated
        # Where not done, obs is the state the step reached; where done, a fresh start state.
        assert torch.equal(tr.obs[~done], tr.final_obs[~done])
        assert torch.equal(tr.obs, env.state.float())
        if done.any():
            assert (tr.obs[done].abs() <= 0.05).all()
            assert (tr.final_obs[done].abs()[:, [0, 2]] > torch.tensor([2.4, THETA_LIMIT])).any(1).all()
            assert not torch.equal(env.state[done], before[done])
            assert torch.equal(tr.episode_length[done], lengths[done])
            assert torch.equal(tr.episode_return[done], lengths[done].float())  # reward 1 per step
            assert (env.elapsed_steps[done] == 0).all()
            lengths[done] = 0
            finished += int(done.sum())
        obs = tr.obs
    assert finished > 50


def test_cartpole_seed_reproducible():
    def run(seed):
        env = CartPole(num_envs=5, seed=seed)
        policy = _random_policy(0)
        obs = [env.reset()]
        for _ in range(100):
            obs.append(env.step(policy(obs[-1])).obs)
        return torch.stack(obs)

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
    env = CartPole(num_envs=3)
    assert torch.equal(env.reset(seed=11), env.reset(seed=11))
    mp.set_seed(0)
    a = CartPole(num_envs=3).reset()
    mp.set_seed(0)
    assert torch.equal(a, CartPole(num_envs=3).reset())  # seed=None follows mp.set_seed


@pytest.mark.parametrize(
    "action, match",
    [
        (torch.tensor([0, 1]), r"action must have shape \(3,\)"),
        (torch.zeros(3, 1, dtype=torch.long), r"action must have shape \(3,\)"),
        (torch.tensor([0.0, 1.0, 0.0]), r"action must be an integer tensor .*\{0, 1\}"),
        (torch.tensor([True, False, True]), "action must be an integer"),
        (torch.tensor([0, 2, 1]), r"action values must be in \{0, 1\}"),
        (torch.tensor([0, -1, 1]), r"action values must be in \{0, 1\}"),
        (torch.tensor([0, 1, -2], dtype=torch.int32), r"action values must be in \{0, 1\}"),
    ],
)
def test_cartpole_rejects_bad_actions(action, match):
    env = CartPole(num_envs=3, seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_envs=0), "num_envs must be an int >= 1"),
        (dict(num_envs=2.0), "num_envs must be an int >= 1"),
        (dict(max_episode_steps=0), "max_episode_steps must be an int >= 1"),
        (dict(seed=-1), "seed must be a non-negative int"),
    ],
)
def test_cartpole_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CartPole(**kwargs)


def test_cartpole_accepts_int32_and_lists():
    env = CartPole(num_envs=2, seed=0)
    assert env.step(torch.tensor([0, 1], dtype=torch.int32)).obs.shape == (2, 4)
    assert env.step([1, 0]).obs.shape == (2, 4)
