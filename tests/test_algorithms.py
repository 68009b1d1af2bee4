"""REINFORCE, A2C, TRPO and PPO: they learn CartPole, repeat themselves under one seed, report
the shared metrics, honour PPO's switches, and fail loudly on bad configs and NaN losses."""
import dataclasses
import math

import pytest
import torch

torch.set_num_threads(1)

from minippo import a2c, ppo, reinforce, schedules, trpo  # noqa: E402
from minippo.envs import CartPole  # noqa: E402

ALGOS = {
    "reinforce": (reinforce, reinforce.ReinforceConfig),
    "a2c": (a2c, a2c.A2CConfig),
    "trpo": (trpo, trpo.TRPOConfig),
    "ppo": (ppo, ppo.PPOConfig),
}
UNPREFIXED = ["global_step", "time/elapsed", "rollout/episodic_return", "rollout/episode_length",
              "time/steps_per_second"]
#: The metric dictionary's shared metrics (book/metrics.md); each algorithm logs them under its own name (ppo/..., trpo/..., ...)
SHARED_METRICS = ["policy_loss", "value_loss", "entropy", "kl_divergence", "clip_fraction",
                  "ratio_mean", "ratio_std", "explained_variance", "value_pred_mean",
                  "mean_advantage", "mean_reward", "reward_std"]


def short(config_cls, updates=3, **kw):
    """A config with the defaults' shape but only a few updates (4 envs x 32 steps)."""
    kw = {"num_envs": 4, "num_steps": 32, **kw}
    return config_cls(total_steps=updates * kw["num_envs"] * kw["num_steps"], **kw)


# --------------------------------------------------------------------------- learning
# Seeded, CPU, one thread; each stops as soon as the mean of the last 20 finished episodes
# reaches the bar (History.solved_at, the benchmark's definition) with the DEFAULT config.

@pytest.mark.parametrize("name, bar", [("ppo", 475.0), ("trpo", 400.0), ("a2c", 400.0),
                                       ("reinforce", 200.0)])
def test_learns_cartpole(name, bar):
    module, config_cls = ALGOS[name]
    _, history = module.train(config_cls(), seed=0, progress=False, stop_at_return=bar)
    solved = history.solved_at(bar)
    assert solved is not None, (
        f"{name} did not reach {bar}: last 20 episodes average {history.recent_return():.1f} "
        f"after {history['global_step'][-1]} steps")
    assert history.recent_return() >= bar - 50  # and it did not collapse in the last update


# --------------------------------------------------------------------------- shared contract
@pytest.mark.parametrize("name", list(ALGOS))
def test_same_seed_same_history(name):
    module, config_cls = ALGOS[name]
    config = short(config_cls)
    runs = [module.train(config, seed=3, progress=False)[1] for _ in range(2)]
    other = module.train(config, seed=4, progress=False)[1]
    for key in runs[0].updates:
        if key.startswith("time/"):
            continue  # wall-clock columns differ; every number the algorithm computes does not
        a, b = runs[0].updates[key], runs[1].updates[key]
        assert all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b)), key
    assert runs[0].episodes["return"] == runs[1].episodes["return"]
    assert runs[0].updates[f"{name}/policy_loss"] != other.updates[f"{name}/policy_loss"]


@pytest.mark.parametrize("name", list(ALGOS))
def test_reports_shared_metrics(name):
    module, config_cls = ALGOS[name]
    config = short(config_cls, updates=2)
    _, history = module.train(config, seed=0, progress=False)
    assert len(history) == 2
    assert history["global_step"] == [config.batch_size, 2 * config.batch_size]
    for key in UNPREFIXED + [f"{name}/{metric}" for metric in SHARED_METRICS]:
        assert key in history.updates, key
        if key not in ("rollout/episodic_return", "rollout/episode_length",
                       f"{name}/value_loss", f"{name}/explained_variance"):
            assert all(math.isfinite(v) for v in history[key]), key
    assert all(v >= 0 for v in history[f"{name}/kl_divergence"])
    assert all(0 <= v <= 1 for v in history[f"{name}/clip_fraction"])
    # an honest prefix: only PPO logs under ppo/
    assert name == "ppo" or not any(key.startswith("ppo/") for key in history.updates)
    assert history.config == config
    assert len(history.episodes["return"]) > 0  # 4 envs x 64 random steps end some episodes


@pytest.mark.parametrize("name", list(ALGOS))
def test_nan_loss_stops_with_update_number(name):
    class NaNRewards(CartPole):
        def step(self, action):
            tr = super().step(action)
            return tr._replace(reward=torch.full_like(tr.reward, math.nan))

    module, config_cls = ALGOS[name]
    config = short(config_cls)
    with pytest.raises(FloatingPointError, match="at update 1"):
        module.train(config, env=NaNRewards(config.num_envs, seed=0), seed=0, progress=False)


@pytest.mark.parametrize("name", list(ALGOS))
def test_config_validation_names_field(name):
    _, config_cls = ALGOS[name]
    with pytest.raises(ValueError, match=r"num_envs must be in \[1, inf\], got 0"):
        config_cls(num_envs=0)
    with pytest.raises(ValueError, match="gamma must be in"):
        config_cls(gamma=1.5)
    with pytest.raises(ValueError, match="total_steps must be in"):
        config_cls(total_steps=1)
    with pytest.raises(ValueError, match=r"adam_eps must be in \(0.0, inf\]"):
        config_cls(adam_eps=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config_cls().gamma = 0.5


# --------------------------------------------------------------------------- PPO switches
@pytest.mark.parametrize("switch", [
    dict(clip_eps=None), dict(clip_eps=float("inf")), dict(clip_value=True),
    dict(max_grad_norm=None), dict(norm_adv=False), dict(ent_coef=0.01),
    dict(learning_rate_schedule="constant"), dict(learning_rate_schedule="warmup_cosine"),
    dict(target_kl=None),
    dict(orthogonal_init=False), dict(update_epochs=1, num_minibatches=1),
    dict(hidden_sizes=(32,)),
])
def test_ppo_switches_run(switch):
    config = short(ppo.PPOConfig, updates=2, **switch)
    _, history = ppo.train(config, seed=0, progress=False)
    assert len(history) == 2
    assert all(math.isfinite(v) for v in history["ppo/policy_loss"])


def test_ppo_unclipped_reports_clip_fraction_at_default_eps():
    config = short(ppo.PPOConfig, updates=2, clip_eps=None, learning_rate=0.05, target_kl=None)
    _, history = ppo.train(config, seed=0, progress=False)
    assert max(history["ppo/clip_fraction"]) > 0  # big unclipped steps leave [0.8, 1.2]


def test_ppo_target_kl_stops_the_epochs_early():
    full = short(ppo.PPOConfig, updates=2, update_epochs=4, num_minibatches=4, target_kl=None)
    _, h_full = ppo.train(full, seed=0, progress=False)
    assert h_full["ppo/num_gradient_steps"] == [16.0, 16.0]
    tiny = dataclasses.replace(full, target_kl=1e-9)
    _, h_tiny = ppo.train(tiny, seed=0, progress=False)
    # the first minibatch is at ratio 1 (KL 0) and steps; the next one already exceeds 1.5 target
    assert h_tiny["ppo/num_gradient_steps"] == [1.0, 1.0]


def test_ppo_learning_rate_follows_schedule():
    config = short(ppo.PPOConfig, updates=4, learning_rate=1e-3, learning_rate_schedule="linear")
    _, history = ppo.train(config, seed=0, progress=False)
    expected = [schedules.linear_anneal(i, 4, 1e-3) for i in range(4)]
    assert history["ppo/learning_rate"] == pytest.approx(expected)
    config = short(ppo.PPOConfig, updates=4, learning_rate=1e-3,
                   learning_rate_schedule="warmup_cosine", warmup_fraction=0.25)
    _, history = ppo.train(config, seed=0, progress=False)
    expected = [schedules.warmup_cosine(i, 4, 1e-3, 1) for i in range(4)]
    assert history["ppo/learning_rate"] == pytest.approx(expected)


def test_ppo_first_minibatch_has_ratio_one():
    """Before the first step the new policy is the old one: the loss equals -mean(A)."""
    config = short(ppo.PPOConfig, updates=1)
    env = CartPole(config.num_envs, seed=0)
    from minippo.advantages import advantages_and_returns
    from minippo.nets import ActorCritic
    from minippo.optim import adam
    from minippo.rollout import collect

    torch.manual_seed(0)
    agent = ActorCritic.from_env(env)
    rollout, _ = collect(env, agent, env.reset(), config.num_steps)
    adv, ret = advantages_and_returns(rollout, config.gamma, config.gae_lambda)
    b = rollout.flatten()
    loss, parts = ppo.ppo_loss(agent, b["obs"], b["actions"], b["logp"], adv.flatten(),
                               ret.flatten(), b["values"],
                               dataclasses.replace(config, norm_adv=False))
    torch.testing.assert_close(parts["policy_loss"], -adv.mean(), atol=1e-5, rtol=1e-5)
    assert adam(agent.parameters(), 1e-3).param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("field, value, match", [
    ("clip_eps", 1.5, "clip_eps must be in"),
    ("learning_rate_schedule", "cosine", "learning_rate_schedule must be one of"),
    ("num_minibatches", 0, "num_minibatches must be in"),
    ("update_epochs", 0, "update_epochs must be in"),
    ("max_grad_norm", 0.0, "max_grad_norm must be in"),
    ("target_kl", -0.1, "target_kl must be in"),
    ("ent_coef", -1.0, "ent_coef must be in"),
    ("learning_rate", 0.0, "learning_rate must be in"),
    ("hidden_sizes", (), "hidden_sizes"),
])
def test_ppo_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        ppo.PPOConfig(**{field: value})
    with pytest.raises(ValueError, match="clip_value=True"):
        ppo.PPOConfig(clip_value=True, clip_eps=None)


def test_ppo_on_continuous_pendulum_shapes():
    """A Gaussian policy on a Gymnasium vector env: the pipeline runs (no learning claim)."""
    pytest.importorskip("gymnasium")
    from minippo.envs import GymVecEnv

    env = GymVecEnv("Pendulum-v1", num_envs=4, seed=0)
    config = ppo.PPOConfig(num_envs=4, num_steps=64, total_steps=4 * 64 * 3, gamma=0.99)
    agent, history = ppo.train(config, env=env, seed=0, progress=False)
    assert not agent.discrete and agent.action_dim == 1
    assert len(history) == 3
    for key in ("ppo/policy_loss", "ppo/value_loss", "ppo/kl_divergence", "ppo/entropy"):
        assert all(math.isfinite(v) for v in history[key]), key
    from minippo.rollout import collect

    rollout, next_obs = collect(env, agent, env.reset(seed=1), 8)
    assert rollout.obs.shape == (8, 4, 3) and rollout.actions.shape == (8, 4, 1)
    assert rollout.logp.shape == rollout.values.shape == (8, 4)
    assert next_obs.shape == (4, 3)
    env.close()


# --------------------------------------------------------------------------- tests that catch a broken PPO
def _rollout_and_agent(config, seed=0):
    from minippo.nets import ActorCritic
    from minippo.rollout import collect

    env = CartPole(config.num_envs, seed=seed)
    torch.manual_seed(seed)
    agent = ActorCritic.from_env(env)
    rollout, _ = collect(env, agent, env.reset(seed=seed), config.num_steps)
    return agent, rollout


def test_ppo_whitens_the_minibatch_advantages():
    """norm_adv=True is the loss of the whitened advantages, and not the loss of the raw ones
    (a batch whose advantages have mean 5 and spread 3)."""
    config = short(ppo.PPOConfig, updates=1)
    agent, rollout = _rollout_and_agent(config)
    b = rollout.flatten()
    adv = 5.0 + 3.0 * torch.randn(b["logp"].shape, generator=torch.Generator().manual_seed(1))
    args = (agent, b["obs"], b["actions"], b["logp"].detach() - 0.05, adv, b["values"] + 1.0,
            b["values"])

    def loss_and_grad(advantages, norm_adv):
        agent.zero_grad()
        loss, _ = ppo.ppo_loss(*args[:4], advantages, *args[5:],
                               dataclasses.replace(config, norm_adv=norm_adv))
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in agent.actor.parameters()])

    from minippo.advantages import whiten

    whitened, grad_whitened = loss_and_grad(adv, True)
    expected, grad_expected = loss_and_grad(whiten(adv), False)
    raw, grad_raw = loss_and_grad(adv, False)
    torch.testing.assert_close(whitened, expected)
    torch.testing.assert_close(grad_whitened, grad_expected)
    assert not torch.allclose(grad_whitened, grad_raw, rtol=0.1, atol=0)


def _kl_after_epochs(config, epochs):
    """The k3 KL(old || new) on the whole batch after ``epochs`` full-batch PPO steps: with one
    minibatch, the KL that update() measures before its step number ``epochs + 1``."""
    from minippo.objectives import kl_k3
    from minippo.optim import adam

    agent, rollout = _rollout_and_agent(config)
    optimizer = adam(agent.parameters(), config.learning_rate, config.adam_eps)
    metrics = ppo.update(agent, optimizer, rollout, dataclasses.replace(
        config, update_epochs=epochs, target_kl=None))
    assert metrics["ppo/num_gradient_steps"] == epochs
    b = rollout.flatten()
    with torch.no_grad():
        logp, _ = agent.policy_terms(b["obs"], b["actions"])
    return float(kl_k3(b["logp"], logp).mean())


def test_ppo_target_kl_threshold_is_one_and_a_half_times_target():
    """The docstring's rule: stop before a step whose pre-step KL exceeds 1.5 x target_kl.
    With one minibatch per epoch the KL before step 2 is the KL after step 1: a target just
    above KL/1.5 lets step 2 (and not step 3) run, a target just below stops after step 1."""
    from minippo.objectives import TARGET_KL_FACTOR
    from minippo.optim import adam

    assert TARGET_KL_FACTOR == 1.5
    config = short(ppo.PPOConfig, updates=1, update_epochs=4, num_minibatches=1,
                   learning_rate_schedule="constant")
    kl1, kl2 = _kl_after_epochs(config, 1), _kl_after_epochs(config, 2)
    assert kl2 > 1.05 * kl1 > 0  # the KL grows from step to step: the margins below mean something
    for target, steps in [(kl1 / 1.5 * 1.02, 2), (kl1 / 1.5 * 0.98, 1)]:
        agent, rollout = _rollout_and_agent(config)
        optimizer = adam(agent.parameters(), config.learning_rate, config.adam_eps)
        metrics = ppo.update(agent, optimizer, rollout, dataclasses.replace(config, target_kl=target))
        assert metrics["ppo/num_gradient_steps"] == steps, (target, kl1, kl2)
        assert metrics["ppo/early_stopped"] == 1.0


@pytest.mark.parametrize("field, value, error, match", [
    ("update_epochs", 2.5, TypeError, r"update_epochs must be an int, got 2.5 \(float\)"),
    ("learning_rate", "0.01", TypeError, r"learning_rate must be a number, got '0.01' \(str\)"),
    ("norm_adv", "yes", TypeError, "norm_adv must be a bool"),
    ("target_kl", "0.01", TypeError, "target_kl must be a number or None"),
    ("num_envs", True, TypeError, "num_envs must be an int"),
    ("hidden_sizes", 64, TypeError, "hidden_sizes must be a tuple of ints"),
    ("learning_rate_schedule", 1, TypeError, "learning_rate_schedule must be a string"),
])
def test_config_types_are_checked(field, value, error, match):
    with pytest.raises(error, match=match):
        ppo.PPOConfig(**{field: value})


@pytest.mark.parametrize("name", list(ALGOS))
def test_every_config_checks_types(name):
    _, config_cls = ALGOS[name]
    with pytest.raises(TypeError, match="num_steps must be an int"):
        config_cls(num_steps=32.0)
    with pytest.raises(TypeError, match="gamma must be a number"):
        config_cls(gamma="0.99")
