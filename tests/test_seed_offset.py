"""The seed knob: ``MINIPPO_SEED_OFFSET=k`` shifts every seed a run uses by ``k``.

Checked against the unshifted run with the shifted seed (offset 1 with seed s is exactly offset 0
with seed s + 1), for the global RNGs, generators, the environments, a CartPole trainer and a
language-model sampler, plus the SFT cache and a bad value.
"""
import random

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

import minippo as mp  # noqa: E402
from minippo import envs, ppo  # noqa: E402
from minippo.lm import sft  # noqa: E402

OFFSET = "MINIPPO_SEED_OFFSET"


def draws():
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_offset_defaults_to_zero(monkeypatch):
    monkeypatch.delenv(OFFSET, raising=False)
    assert mp.utils.seed_offset() == 0
    assert mp.utils.shifted_seed(5) == 5


@pytest.mark.parametrize("bad", ["-1", "one", "1.5"])
def test_bad_offset_names_the_variable(monkeypatch, bad):
    monkeypatch.setenv(OFFSET, bad)
    with pytest.raises(ValueError, match=f"{OFFSET} must be a non-negative integer, got '{bad}'"):
        mp.set_seed(0)


def test_set_seed_generator_and_rng_are_shifted(monkeypatch):
    monkeypatch.setenv(OFFSET, "0")
    mp.set_seed(3)
    expected = draws()
    g3, r3 = torch.rand(4, generator=mp.generator(3)), mp.rng(3).random()
    monkeypatch.setenv(OFFSET, "1")
    mp.set_seed(2)
    got = draws()
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    assert torch.equal(torch.rand(4, generator=mp.generator(2)), g3)
    assert mp.rng(2).random() == r3
    mp.set_seed(3)
    assert not torch.equal(draws()[2], expected[2]), "offset 1 must change seed 3's numbers"


def make_env(kind, seed):
    if kind == "gymnasium":
        pytest.importorskip("gymnasium")
        return envs.GymVecEnv("CartPole-v1", num_envs=2, seed=seed)
    return envs.CartPole(4, seed=seed)


@pytest.mark.parametrize("kind", ["cartpole", "gymnasium"])
def test_environments_are_shifted(monkeypatch, kind):
    monkeypatch.setenv(OFFSET, "0")
    expected = make_env(kind, 1).reset(seed=1)
    monkeypatch.setenv(OFFSET, "1")
    assert torch.equal(make_env(kind, 0).reset(seed=0), expected)
    monkeypatch.setenv(OFFSET, "0")
    assert not torch.equal(make_env(kind, 0).reset(seed=0), expected)


def test_a_trainer_run_is_shifted(monkeypatch):
    config = ppo.PPOConfig(num_envs=4, num_steps=32, total_steps=3 * 4 * 32)
    monkeypatch.setenv(OFFSET, "0")
    expected = ppo.train(config, seed=1, progress=False)[1]
    monkeypatch.setenv(OFFSET, "1")
    got = ppo.train(config, seed=0, progress=False)[1]
    unshifted = ppo.train(config, seed=1, progress=False)[1]
    for key in ("ppo/policy_loss", "ppo/kl_divergence", "rollout/episodic_return"):
        assert got[key] == expected[key], key
    assert unshifted["ppo/policy_loss"] != expected["ppo/policy_loss"]


def test_language_model_sampling_is_shifted(monkeypatch):
    model = mp.lm.GPT(mp.lm.GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=16))
    tok = mp.lm.CharTokenizer()

    def sample(seed):
        return mp.lm.rlhf.sample_responses(model, ["1:", "2:"], tok, 6, 1.0, mp.generator(seed))[1]

    monkeypatch.setenv(OFFSET, "0")
    expected = sample(4)
    monkeypatch.setenv(OFFSET, "2")
    assert sample(2) == expected


def test_sft_cache_is_keyed_by_the_shifted_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIPPO_CACHE", str(tmp_path))
    corpus = [("1:", "a"), ("2:", "bb")]
    config = sft.SFTConfig(iterations=2, batch_size=2, warmup_iterations=0, model=mp.lm.GPTConfig(n_layer=1, n_head=1, n_embd=8,
                                                                         block_size=16))
    monkeypatch.setenv(OFFSET, "0")
    sft.pretrained_sft(corpus, config, seed=0, progress=False)
    monkeypatch.setenv(OFFSET, "1")
    sft.pretrained_sft(corpus, config, seed=0, progress=False)
    assert len(list(tmp_path.glob("sft-*.pt"))) == 2, "offset 1 must not reuse offset 0's model"
