"""Tests of minippo.envs: CartPole against Gymnasium step by step, and the other envs' contracts."""
import math

import numpy as np
import pytest
import torch

import minippo as mp
from minippo.envs import Bandit, CartPole, ChainMDP, GymVecEnv, Transition

torch.set_num_threads(1)

try:  # only the comparisons with Gymnasium and the adapter need it; Bandit and ChainMDP do not
    import gymnasium as gym
except ImportError:
    gym = None
needs_gymnasium = pytest.mark.skipif(gym is None, reason="gymnasium is not installed")

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
                # (Bit-identical on the machine this was written on; 1e-12 leaves room for libm.)
                np.testing.assert_allclose(
                    env.state[i].numpy(), g.unwrapped.state, rtol=0, atol=1e-12
                )
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


@needs_gymnasium
def test_cartpole_matches_gymnasium_random_actions():
    """Random actions: many short episodes, ended by the pole angle (and sometimes x)."""
    env = CartPole(num_envs=6, seed=0)
    endings = _run_against_gym(env, _random_policy(1), 400)
    assert endings.count("theta") > 50


@needs_gymnasium
def test_cartpole_matches_gymnasium_position_termination():
    env = CartPole(num_envs=4, seed=1)
    endings = _run_against_gym(env, lambda o: _balance(o, bias=0.05), 400)
    assert endings.count("x") >= 4


@needs_gymnasium
def test_cartpole_matches_gymnasium_truncation_at_500():
    """A balancing controller: full 500-step episodes, truncated (not terminated) at 500."""
    env = CartPole(num_envs=3, seed=2)
    endings = _run_against_gym(env, _balance, 520)
    assert endings == ["time"] * 3


@needs_gymnasium
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
            limits = torch.tensor([2.4, THETA_LIMIT])
            assert (tr.final_obs[done].abs()[:, [0, 2]] > limits).any(1).all()
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
        (torch.tensor([0.0, 1.0, 0.0]), r"action must be an integer tensor .*\{0, ..., 1\}"),
        (torch.tensor([True, False, True]), "action must be an integer"),
        (torch.tensor([0, 2, 1]), r"action values must be in \{0, ..., 1\}"),
        (torch.tensor([0, -1, 1]), r"action values must be in \{0, ..., 1\}"),
        (torch.tensor([0, 1, -2], dtype=torch.int32), r"action values must be in \{0, ..., 1\}"),
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


def test_cartpole_state_setter_validates():
    env = CartPole(num_envs=2, seed=0)
    with pytest.raises(ValueError, match=r"state must have shape \(2, 4\)"):
        env.state = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"elapsed_steps must have shape \(2,\)"):
        env.elapsed_steps = torch.zeros(3)


# ---------------------------------------------------------------------------------------------
# Bandit
# ---------------------------------------------------------------------------------------------


def test_bandit_expected_reward_gradient_is_exact():
    """Softmax policy: dJ/dz_k = pi_k (mu_k - J); autograd, formula, finite differences agree."""
    bandit = Bandit([0.2, -0.5, 1.0, 0.3], std=2.0)
    z = torch.tensor([0.1, -0.3, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
    J = bandit.expected_reward(torch.softmax(z, -1))
    (grad,) = torch.autograd.grad(J, z)
    pi, mu = torch.softmax(z.detach(), -1), bandit.means
    torch.testing.assert_close(grad, pi * (mu - J.detach()))
    eps = 1e-6
    fd = torch.stack([
        (bandit.expected_reward(torch.softmax(z.detach() + eps * e, -1))
         - bandit.expected_reward(torch.softmax(z.detach() - eps * e, -1))) / (2 * eps)
        for e in torch.eye(4, dtype=torch.float64)
    ])
    torch.testing.assert_close(grad, fd, atol=1e-8, rtol=1e-6)
    # Batched probabilities give one expected reward per row.
    assert bandit.expected_reward(torch.full((5, 4), 0.25)).shape == (5,)


def test_bandit_pull_statistics_and_score_function_estimate():
    bandit = Bandit(torch.tensor([0.0, 1.0, -1.0]), std=0.5)
    assert (bandit.num_actions, bandit.optimal_action, bandit.optimal_value) == (3, 1, 1.0)
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    actions = torch.arange(3).repeat(n // 3)
    r = bandit.pull(actions, generator=gen)
    assert r.shape == actions.shape and r.dtype == torch.float32
    for a in range(3):
        assert float(r[actions == a].mean()) == pytest.approx(float(bandit.means[a]), abs=0.01)
        assert float(r[actions == a].std()) == pytest.approx(0.5, abs=0.01)
    # The score-function (REINFORCE) estimate agrees with the exact gradient.
    z = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    dist = torch.distributions.Categorical(logits=z)
    a = dist.sample((n,))
    r = bandit.pull(a, generator=gen)
    (estimate,) = torch.autograd.grad((dist.log_prob(a) * r).mean(), z)
    (exact,) = torch.autograd.grad(bandit.expected_reward(torch.softmax(z, -1)), z)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)
    # Same generator seed, same rewards.
    torch.testing.assert_close(
        bandit.pull(actions[:10], torch.Generator().manual_seed(3)),
        bandit.pull(actions[:10], torch.Generator().manual_seed(3)),
    )


def test_bandit_validates_inputs():
    with pytest.raises(ValueError, match="means must be a 1-D"):
        Bandit([[0.0, 1.0]])
    with pytest.raises(ValueError, match="std must be in"):
        Bandit([0.0, 1.0], std=-1.0)
    bandit = Bandit([0.0, 1.0])
    with pytest.raises(ValueError, match=r"actions must be in \{0, ..., 1\}"):
        bandit.pull(torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="actions must be an integer"):
        bandit.pull(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"probs must have shape \(2,\) or \(N, 2\)"):
        bandit.expected_reward(torch.ones(3) / 3)


# ---------------------------------------------------------------------------------------------
# ChainMDP
# ---------------------------------------------------------------------------------------------


def _random_policy_probs(S, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(S, 2, generator=g, dtype=torch.float64), -1)


def test_chain_true_values_solve_the_bellman_equation():
    for kwargs in [dict(), dict(num_states=10, gamma=0.99, step_reward=-0.02), dict(gamma=1.0)]:
        mdp = ChainMDP(**kwargs)
        S = mdp.num_states
        pi = _random_policy_probs(S, 0)
        v = mdp.true_values(pi)  # (S,)
        q = mdp.true_q_values(pi)  # (S, A)
        adv = mdp.true_advantages(pi)  # (S, A)
        assert v.shape == (S,) and q.shape == adv.shape == (S, 2)
        live = ~mdp.terminal
        bellman = (pi * (mdp.R + mdp.gamma * mdp.P @ v)).sum(-1)  # (S,)
        torch.testing.assert_close(v[live], bellman[live], atol=1e-12, rtol=0)
        assert float(v[mdp.terminal].abs().max()) == 0.0
        zeros = torch.zeros(S, dtype=torch.float64)
        torch.testing.assert_close((pi * adv).sum(-1), zeros, atol=1e-12, rtol=0)
    # P is a proper transition tensor and R its expected reward.
    torch.testing.assert_close(mdp.P.sum(-1), torch.ones(S, 2, dtype=torch.float64))
    torch.testing.assert_close(mdp.R, (mdp.P * mdp.reward_table).sum(-1))


def test_chain_values_are_interesting_by_default():
    """Uniform policy: 'right' is bad in state 0 (the wall bonus) and good near the goal."""
    mdp = ChainMDP()
    adv = mdp.true_advantages(torch.full((7, 2), 0.5))
    assert adv[0, 1] < 0 < adv[1, 1] < adv[5, 1]


def test_chain_true_values_are_differentiable():
    mdp = ChainMDP(num_states=5, gamma=0.95)
    z = torch.zeros(5, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(mdp.true_values(torch.softmax(z, -1))[0], z)
    e = torch.zeros(5, 2, dtype=torch.float64)
    e[2, 1] = 1e-6
    v_plus = mdp.true_values(torch.softmax(e, -1))[0]
    v_minus = mdp.true_values(torch.softmax(-e, -1))[0]
    fd = (v_plus - v_minus) / 2e-6
    assert float(grad[2, 1]) == pytest.approx(float(fd), rel=1e-5)


def _monte_carlo_returns(mdp, pi, start, first_action=None, max_steps=300):
    """Discounted return of each env's first episode from ``start`` (first action optional)."""
    B = mdp.num_envs
    S = mdp.num_states
    mdp.reset(start_probs=torch.eye(S, dtype=torch.float64)[start])
    gen = torch.Generator().manual_seed(1)
    g = torch.zeros(B, dtype=torch.float64)
    alive = torch.ones(B, dtype=torch.bool)
    for t in range(max_steps):
        a = torch.multinomial(pi[mdp.state].float(), 1, generator=gen).squeeze(1)
        if t == 0 and first_action is not None:
            a = torch.full((B,), first_action)
        tr = mdp.step(a)
        g += alive * mdp.gamma**t * tr.reward.double()
        alive &= ~tr.terminated
        assert not tr.truncated.any()
        if not alive.any():
            break
    return g


@pytest.mark.parametrize("start", [0, 4])
def test_chain_true_values_match_monte_carlo(start):
    mdp = ChainMDP(num_envs=4000, gamma=0.9, reward_noise_std=0.3, seed=0)
    pi = _random_policy_probs(7, 2)
    g = _monte_carlo_returns(mdp, pi, start)
    se = float(g.std()) / math.sqrt(len(g))
    assert abs(float(g.mean()) - float(mdp.true_values(pi)[start])) < 4 * se
    # Q: the same with the first action fixed.
    g = _monte_carlo_returns(mdp, pi, start, first_action=1)
    se = float(g.std()) / math.sqrt(len(g))
    assert abs(float(g.mean()) - float(mdp.true_q_values(pi)[start, 1])) < 4 * se


def test_chain_step_semantics():
    mdp = ChainMDP(num_states=5, num_envs=6, max_episode_steps=8, seed=3)
    obs = mdp.reset()
    assert obs.shape == (6, 5) and obs.dtype == torch.float32 and mdp.obs_dim == 5
    assert torch.equal(obs.sum(1), torch.ones(6)) and obs[:, 4].sum() == 0
    returns = torch.zeros(6)
    lengths = torch.zeros(6, dtype=torch.long)
    seen = {"terminated": 0, "truncated": 0}
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        tr = mdp.step(torch.randint(0, 2, (6,), generator=gen))
        returns += tr.reward
        lengths += 1
        done = tr.terminated | tr.truncated
        assert torch.equal(tr.obs[~done], tr.final_obs[~done])
        assert torch.equal(tr.terminated, tr.final_obs[:, 4] == 1)  # the goal ends the episode
        assert (tr.obs[:, 4] == 0).all()  # obs is always a live (reset) state
        torch.testing.assert_close(tr.episode_return[done], returns[done])
        assert torch.equal(tr.episode_length[done], lengths[done])
        assert (tr.episode_length[tr.truncated] == 8).all()
        seen["terminated"] += int(tr.terminated.sum())
        seen["truncated"] += int(tr.truncated.sum())
        returns[done] = 0
        lengths[done] = 0
    assert seen["terminated"] > 10 and seen["truncated"] > 10


def test_chain_slip_frequency_and_reproducibility():
    mdp = ChainMDP(num_envs=20000, seed=0)
    mdp.reset(start_probs=torch.eye(7, dtype=torch.float64)[2])
    tr = mdp.step(torch.ones(20000, dtype=torch.long))
    moved = tr.final_obs.argmax(1)
    assert float((moved == 3).float().mean()) == pytest.approx(0.9, abs=0.01)
    assert set(moved.tolist()) == {1, 3}
    a = ChainMDP(num_envs=4, seed=5)
    b = ChainMDP(num_envs=4, seed=5)
    for _ in range(20):
        act = torch.tensor([0, 1, 1, 0])
        ta, tb = a.step(act), b.step(act)
        assert torch.equal(ta.obs, tb.obs) and torch.equal(ta.reward, tb.reward)


def test_chain_validates_inputs():
    with pytest.raises(ValueError, match="num_states must be an int >= 2"):
        ChainMDP(num_states=1)
    with pytest.raises(ValueError, match=r"gamma must be in \[0.0, 1.0\]"):
        ChainMDP(gamma=1.5)
    with pytest.raises(ValueError, match=r"slip must be in"):
        ChainMDP(slip=-0.1)
    mdp = ChainMDP(num_states=4, num_envs=2)
    with pytest.raises(ValueError, match=r"policy_probs must have shape \(4, 2\)"):
        mdp.true_values(torch.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="policy_probs rows"):
        mdp.true_values(torch.ones(4, 2))
    with pytest.raises(ValueError, match="start_probs must be non-negative"):
        mdp.reset(start_probs=torch.tensor([0.0, 0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"action values must be in \{0, ..., 1\}"):
        mdp.step(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
        mdp.step(torch.tensor([0]))


# ---------------------------------------------------------------------------------------------
# GymVecEnv
# ---------------------------------------------------------------------------------------------


@needs_gymnasium
def test_gym_vec_env_discrete_cartpole():
    env = GymVecEnv("CartPole-v1", num_envs=4, seed=0)
    assert (env.obs_dim, env.num_actions, env.action_dim) == (4, 2, None)
    obs = env.reset(seed=0)
    assert obs.shape == (4, 4) and obs.dtype == torch.float32
    gen = torch.Generator().manual_seed(0)
    lengths = torch.zeros(4, dtype=torch.long)
    finished = 0
    for _ in range(150):
        tr = env.step(torch.randint(0, 2, (4,), generator=gen))
        assert tr.obs.dtype == tr.final_obs.dtype == tr.reward.dtype == torch.float32
        assert tr.terminated.dtype == tr.truncated.dtype == torch.bool
        lengths += 1
        done = tr.terminated | tr.truncated
        assert torch.equal(tr.obs[~done], tr.final_obs[~done])
        if done.any():
            # final_obs is where the pole fell; obs is a fresh start state.
            fo = tr.final_obs[tr.terminated]
            assert ((fo[:, 0].abs() > 2.4) | (fo[:, 2].abs() > THETA_LIMIT)).all()
            assert (tr.obs[done].abs() <= 0.05).all()
            assert torch.equal(tr.episode_length[done], lengths[done])
            assert torch.equal(tr.episode_return[done], lengths[done].float())
            finished += int(done.sum())
            lengths[done] = 0
    assert finished > 10
    with pytest.raises(ValueError, match=r"action must have shape \(4,\)"):
        env.step(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"action values must be in \{0, ..., 1\}"):
        env.step(torch.tensor([0, 1, 2, 0]))
    env.close()


@needs_gymnasium
def test_gym_vec_env_continuous_pendulum_truncates_at_200():
    env = GymVecEnv("Pendulum-v1", num_envs=3, seed=0)
    twin = GymVecEnv("Pendulum-v1", num_envs=3, seed=0)
    assert (env.obs_dim, env.num_actions, env.action_dim) == (3, None, 1)
    assert env.action_low.tolist() == [-2.0] and env.action_high.tolist() == [2.0]
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 201):
        action = 5 * torch.randn(3, 1, generator=gen)  # mostly outside [-2, 2]
        tr = env.step(action)
        tw = twin.step(action.clamp(-2.0, 2.0))  # clipping is what the adapter does
        assert torch.equal(tr.final_obs, tw.final_obs) and torch.equal(tr.reward, tw.reward)
        assert tr.obs.shape == (3, 3) and tr.reward.shape == (3,)
        assert not tr.terminated.any()
        assert tr.truncated.all() == (t == 200)
    # Step 200: truncated (a time limit), final_obs the state reached, obs a new episode.
    assert tr.episode_length.tolist() == [200, 200, 200]
    assert (tr.episode_return < 0).all()
    assert not torch.equal(tr.obs, tr.final_obs)
    assert (tr.final_obs[:, :2].norm(dim=1) - 1).abs().max() < 1e-5  # (cos, sin) of the angle
    with pytest.raises(ValueError, match=r"action must have shape \(3, 1\)"):
        env.step(torch.zeros(3))
    with pytest.raises(ValueError, match="action must be a floating-point"):
        env.step(torch.zeros(3, 1, dtype=torch.long))


@needs_gymnasium
def test_gym_vec_env_requires_same_step_autoreset():
    from gymnasium.vector import AutoresetMode

    vec = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP})
    with pytest.raises(ValueError, match="SAME_STEP"):
        GymVecEnv(env=vec)
    with pytest.raises(ValueError, match="exactly one of env_id"):
        GymVecEnv()


def test_envs_module_imports_gymnasium_lazily():
    import ast
    import inspect

    import minippo.envs

    tree = ast.parse(inspect.getsource(minippo.envs))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not any(name.startswith("gymnasium") for name in names)


def test_cartpole_custom_time_limit_and_contiguous_outputs():
    env = CartPole(num_envs=3, max_episode_steps=20, seed=0)
    obs = env.reset()
    for t in range(1, 21):
        tr = env.step(_balance(obs))
        obs = tr.obs
        assert tr.truncated.all() == (t == 20) and not tr.terminated.any()
    assert tr.episode_length.tolist() == [20, 20, 20]
    assert tr.obs.is_contiguous() and tr.final_obs.is_contiguous()
    assert (env.elapsed_steps == 0).all()
