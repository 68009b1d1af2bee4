"""Rollout collection: time-major shapes, the truncation bootstrap, episode logging."""
import pytest
import torch

torch.set_num_threads(1)

from minippo.advantages import gae  # noqa: E402
from minippo.envs import CartPole, Transition  # noqa: E402
from minippo.history import History  # noqa: E402
from minippo.nets import ActorCritic  # noqa: E402
from minippo.rollout import collect  # noqa: E402


class ScriptedEnv:
    """Two envs with fixed episode lengths: env 0 is truncated every 3 steps, env 1 terminates
    every 4 steps.  Observation ``(steps into the episode, env id)``; the final observation of an
    episode is ``(length, env id)``, which differs from the next episode's first ``(0, env id)``."""

    obs_dim, num_actions, num_envs = 2, 2, 2
    lengths = torch.tensor([3, 4])

    def reset(self, seed=None):
        self.t = torch.zeros(2, dtype=torch.long)
        return self._obs()

    def _obs(self):
        return torch.stack([self.t.float(), torch.arange(2.0)], dim=1)  # (B, 2)

    def step(self, action):
        self.t = self.t + 1
        final_obs = self._obs()
        done = self.t == self.lengths
        terminated = done & torch.tensor([False, True])
        truncated = done & torch.tensor([True, False])
        ep_len = self.t.clone()
        self.t = torch.where(done, torch.zeros_like(self.t), self.t)
        return Transition(self._obs(), torch.ones(2) * (1 + torch.arange(2.0)), terminated,
                          truncated, final_obs, ep_len.float() * (1 + torch.arange(2.0)), ep_len)


def scripted_rollout(T=10):
    torch.manual_seed(0)
    env, agent = ScriptedEnv(), ActorCritic(2, num_actions=2)
    history = History()
    rollout, next_obs = collect(env, agent, env.reset(), T, history, global_step=100)
    return env, agent, history, rollout, next_obs


def test_shapes_are_time_major():
    _, _, _, r, next_obs = scripted_rollout(T=10)
    assert r.obs.shape == (10, 2, 2) and r.actions.shape == (10, 2)
    for name in ("logp", "values", "rewards", "terminated", "truncated", "next_values"):
        assert getattr(r, name).shape == (10, 2), name
    assert r.terminated.dtype == r.truncated.dtype == torch.bool
    assert next_obs.shape == (2, 2)
    flat = r.flatten()
    assert flat["obs"].shape == (20, 2) and flat["next_values"].shape == (20,)
    torch.testing.assert_close(flat["obs"][3], r.obs[1, 1])  # row t*B + b


def test_next_values_bootstrap_truncation_not_termination():
    _, agent, _, r, next_obs = scripted_rollout(T=10)
    with torch.no_grad():
        v = lambda o: agent.value(torch.as_tensor(o, dtype=torch.float32))  # noqa: E731
        for t in range(10):
            for b in range(2):
                if r.terminated[t, b]:
                    expected = torch.tensor(0.0)
                elif r.truncated[t, b]:
                    expected = v([[3.0, b]])[0]  # V(final_obs): the state the step reached
                elif t == 9:
                    expected = v(next_obs[b:b + 1])[0]
                else:
                    expected = r.values[t + 1, b]
                torch.testing.assert_close(r.next_values[t, b], expected, msg=f"t={t}, b={b}")
    # the script: env 0 truncated at t = 2, 5, 8; env 1 terminated at t = 3, 7
    assert r.truncated[:, 0].nonzero().flatten().tolist() == [2, 5, 8]
    assert r.terminated[:, 1].nonzero().flatten().tolist() == [3, 7]
    assert not r.terminated[:, 0].any() and not r.truncated[:, 1].any()
    # the bootstrap value is not V of the reset observation that follows
    assert not torch.isclose(r.next_values[2, 0], r.values[3, 0])


def test_gae_at_truncated_steps_uses_final_obs_value():
    """Exactly at truncated steps, A_t = r_t + gamma V(final_obs) - V(s_t), for any lambda."""
    _, agent, _, r, _ = scripted_rollout(T=10)
    gamma = 0.9
    adv = gae(r.rewards, r.values, r.next_values, r.terminated, r.truncated, gamma, 0.7)
    with torch.no_grad():
        v_final = agent.value(torch.tensor([[3.0, 0.0]]))[0]
    for t in (2, 5, 8):
        torch.testing.assert_close(adv[t, 0], r.rewards[t, 0] + gamma * v_final - r.values[t, 0])
    for t in (3, 7):  # terminated: no bootstrap
        torch.testing.assert_close(adv[t, 1], r.rewards[t, 1] - r.values[t, 1])


def test_logp_and_values_match_evaluate():
    _, agent, _, r, _ = scripted_rollout(T=6)
    flat = r.flatten()
    logp, _, v = agent.evaluate(flat["obs"], flat["actions"])
    torch.testing.assert_close(logp.detach(), flat["logp"])
    torch.testing.assert_close(v.detach(), flat["values"])


def test_finished_episodes_are_logged_with_global_step():
    _, _, history, _, _ = scripted_rollout(T=10)
    ep = history.episodes
    # env 0 ends at t = 2, 5, 8 (length 3, return 3); env 1 at t = 3, 7 (length 4, return 8)
    assert ep["global_step"] == [100 + 2 * 3, 100 + 2 * 4, 100 + 2 * 6, 100 + 2 * 8, 100 + 2 * 9]
    assert ep["length"] == [3, 4, 3, 4, 3]
    assert ep["return"] == [3.0, 8.0, 3.0, 8.0, 3.0]
    assert all(s >= 0 for s in ep["time/elapsed"])


def test_cartpole_time_limit_is_truncated_and_bootstrapped():
    torch.manual_seed(0)
    env = CartPole(4, max_episode_steps=5, seed=0)
    agent = ActorCritic.from_env(env)
    r, _ = collect(env, agent, env.reset(seed=0), 12)
    assert r.truncated[4].all() and r.truncated[9].all()
    assert not r.terminated.any()
    assert (r.next_values[4] != 0).all()
    assert (r.rewards == 1).all()


def test_bad_num_steps():
    env = CartPole(2, seed=0)
    with pytest.raises(ValueError, match="num_steps"):
        collect(env, ActorCritic.from_env(env), env.reset(), 0)


def test_run_training_loop_order_logging_and_early_stop():
    from minippo.a2c import A2CConfig
    from minippo.training import run_training, start_training

    config = A2CConfig(num_envs=4, num_steps=8, total_steps=4 * 8 * 20)  # 20 updates of 32 steps
    calls = []

    def update(rollout, update_index):
        calls.append((update_index, rollout.rewards.shape))
        return {"a2c/policy_loss": float(update_index)}

    run = start_training(config, None, 0)
    agent, history = run_training(run, config, update, "a2c", progress=False)
    assert agent is run.agent and history is run.history
    assert calls == [(i, (8, 4)) for i in range(1, 21)]
    assert history["global_step"] == [32 * i for i in range(1, 21)]
    assert history["a2c/policy_loss"] == [float(i) for i in range(1, 21)]
    assert "a2c/mean_reward" in history.updates and "ppo/mean_reward" not in history.updates
    assert history.config is config
    # a bar every random policy clears (returns are >= 1): stops after the first update with 20 episodes
    _, stopped = run_training(start_training(config, None, 0), config, update, "a2c",
                              progress=False, stop_at_return=1.0)
    n = len(stopped)
    finished_before = sum(step <= 32 * (n - 1) for step in history.episodes["global_step"])
    assert n < 20 and finished_before < 20 <= len(stopped.episodes["return"])  # the first update it could
    assert history.episodes["return"][:20] == stopped.episodes["return"][:20]  # same seed, same episodes


def test_training_config_declares_and_checks_the_shared_fields():
    import dataclasses

    from minippo.training import TrainingConfig

    config = TrainingConfig(num_envs=4, num_steps=8, total_steps=100)
    assert (config.batch_size, config.iterations) == (32, 3)
    names = [f.name for f in dataclasses.fields(TrainingConfig)]
    assert names == ["num_envs", "num_steps", "total_steps", "gamma", "hidden_sizes", "orthogonal_init",
                     "adam_eps"]
    with pytest.raises(TypeError, match=r"num_envs must be an int, got 2.5 \(float\)"):
        TrainingConfig(num_envs=2.5)
    with pytest.raises(TypeError, match="orthogonal_init must be a bool"):
        TrainingConfig(orthogonal_init=1)
    with pytest.raises(TypeError, match="hidden_sizes must be a tuple of ints"):
        TrainingConfig(hidden_sizes=(64, 64.0))
