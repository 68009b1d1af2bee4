"""Bradley-Terry reward model: the loss, the pairs, reading at EOS, normalisation, learning."""
import math

import pytest
import torch

from minippo.lm.model import GPT, GPTConfig
from minippo.lm.reward_model import (
    PreferencePair,
    RewardModel,
    RewardModelConfig,
    RewardModelReward,
    bradley_terry_loss,
    encode_responses,
    make_preference_pairs,
    pair_accuracy,
    split_pairs,
    train_reward_model,
)
from minippo.lm.tokenizer import CharTokenizer

torch.set_num_threads(1)
TOK = CharTokenizer()


def test_bradley_terry_loss():
    z = torch.zeros(5)
    assert abs(bradley_terry_loss(z, z).item() - math.log(2)) < 1e-7
    r_w, r_l = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0])
    expected = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 / (1 + math.exp(2)))) / 2
    assert abs(bradley_terry_loss(r_w, r_l).item() - expected) < 1e-6
    with pytest.raises(ValueError, match="r_chosen"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


def test_make_preference_pairs_orders_by_score_and_skips_ties():
    prompts = ["a"] * 4 + ["b"] * 2
    responses = ["x", "y", "z", "x", "p", "q"]
    scores = [1.0, 0.0, 0.95, 1.0, 0.5, 0.5]
    pairs = make_preference_pairs(prompts, responses, scores, min_margin=0.1, max_pairs_per_prompt=None)
    assert sorted((p.chosen, p.rejected) for p in pairs) == [("x", "y"), ("z", "y")]
    assert all(p.margin >= 0.1 for p in pairs)
    train, held = split_pairs(pairs + [PreferencePair("c", "u", "v", 1.0)], heldout_fraction=0.5, seed=0)
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in held}) and held


def test_reward_is_read_at_eos_and_ignores_padding():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig())
    torch.nn.init.normal_(gpt.value_head.weight, std=0.5)
    rm = RewardModel(gpt).eval()
    tokens, attn, last = encode_responses(TOK, ["def f(x):\n", "def f(x):\n"], ["    return x", "    return x + 1"])
    assert tokens[0, last[0]] == TOK.eos_id and tokens[1, last[1]] == TOK.eos_id
    alone = rm(*encode_responses(TOK, ["def f(x):\n"], ["    return x"]))
    torch.testing.assert_close(rm(tokens, attn, last)[:1], alone)
    rm.normalise(tokens, attn, last)
    r = rm(tokens, attn, last).detach()
    assert abs(float(r.mean())) < 1e-5 and abs(float(r.std()) - 1) < 1e-4


def test_reward_model_learns_a_simple_preference_and_scores_text():
    # chosen answers use "+", rejected ones "-": learnable from one character
    pairs = [PreferencePair(f"def add{k}(x):\n", f"    return x + {k}", f"    return x - {k}", 1.0) for k in range(1, 10)]
    train, held = pairs[:7], pairs[7:]
    torch.manual_seed(0)
    rm, h = train_reward_model(train, GPT(GPTConfig()), RewardModelConfig(iterations=30, batch_size=8, warmup_iterations=2),
                               heldout=held, progress=False)
    assert abs(h["rm/loss"][0] - math.log(2)) < 1e-6  # zero-initialised head: every pair at 1/2
    assert h["rm/loss"][-1] < 0.3 and pair_accuracy(rm, train) == 1.0
    assert h["rm/heldout_accuracy"][-1] == 1.0
    reward = RewardModelReward(rm, true_reward=lambda p, r, f: (torch.ones(len(r)), {"code/x": 1.0}))
    scores, metrics = reward(["def add8(x):\n"] * 2, ["    return x + 8", "    return x - 8"], torch.tensor([True, False]))
    assert scores[0] > scores[1] + 1.0  # better answer, and the second lost the missing-EOS penalty
    assert metrics["rm/true_score"] == 1.0 and metrics["code/x"] == 1.0
