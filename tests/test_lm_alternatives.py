"""RLOO, GRPO / Dr. GRPO and DPO: their equations against explicit formulas, and that they run."""
import copy
import math

import pytest
import torch

from minippo.lm.alternatives import (
    DPOConfig,
    GRPOConfig,
    RLOOConfig,
    dpo_loss,
    group_advantages,
    grpo_loss,
    leave_one_out_advantages,
    preference_logprobs,
    prompt_response_batch,
    sequence_logprobs,
    train_dpo,
    train_grpo,
    train_rloo,
)
from minippo.lm.model import GPT, GPTConfig
from minippo.lm.reward_model import PreferencePair
from minippo.lm.tokenizer import CharTokenizer

torch.set_num_threads(1)
TOK = CharTokenizer()


def length_reward(prompts, responses, finished):
    return torch.tensor([len(r) / 10.0 for r in responses]), {}


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    m = GPT(GPTConfig())
    with torch.no_grad():  # say EOS now and then
        w = m.tok_emb.weight[TOK.eos_id]
        m.ln_f.bias.copy_(w / w.norm() ** 2 * 3.0)
    return m


def test_grpo_advantages_have_zero_mean_and_unit_std_within_each_group():
    scores = torch.tensor([1.0, 0.0, 0.5, 0.5, 3.0, 3.0, 3.0, 3.0, -1.0, 2.0, 0.0, 1.0])
    adv = group_advantages(scores, 4)
    groups = adv.reshape(3, 4)
    torch.testing.assert_close(groups.mean(dim=1), torch.zeros(3))
    assert torch.all(groups[1] == 0)  # all equal: no signal, no division by zero
    assert abs(float(groups[0].std()) - 1) < 1e-3
    dr = group_advantages(scores, 4, scale=False).reshape(3, 4)
    torch.testing.assert_close(dr, scores.reshape(3, 4) - scores.reshape(3, 4).mean(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(scores, 5)


def test_rloo_baseline_is_the_mean_of_the_others():
    r = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    adv = leave_one_out_advantages(r, 3)
    expected = torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0.0])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(adv.reshape(2, 3).mean(1), torch.zeros(2))


@pytest.mark.parametrize("length_normalise", [True, False])
def test_grpo_loss_matches_the_papers_sum(length_normalise):
    torch.manual_seed(0)
    b, R = 4, 6
    mask = torch.tensor([[1] * 6, [1] * 2 + [0] * 4, [1] * 4 + [0] * 2, [1] * 1 + [0] * 5], dtype=torch.bool)
    logp = torch.randn(b, R) * 0.1 - 1
    logp_old = logp + torch.randn(b, R) * 0.3
    logp_ref = logp + torch.randn(b, R) * 0.2
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5])
    cfg = GRPOConfig(max_new_tokens=R, length_normalise=length_normalise, kl_coef=0.04)
    got = grpo_loss(logp, logp_old, logp_ref, adv, mask, cfg)
    total = 0.0
    for i in range(b):
        z = int(mask[i].sum()) if length_normalise else R
        for t in range(int(mask[i].sum())):
            ratio = math.exp(logp[i, t] - logp_old[i, t])
            surr = min(ratio * adv[i], min(max(ratio, 0.8), 1.2) * adv[i])
            k3 = math.exp(logp_ref[i, t] - logp[i, t]) - (logp_ref[i, t] - logp[i, t]) - 1
            total += (-surr + 0.04 * k3) / z
    assert abs(float(got) - total / b) < 1e-5


def test_dpo_loss_at_initialisation_is_log_2(policy):
    pairs = [PreferencePair("def add3(x):\n", "    return x + 3", "    return x - 3"),
             PreferencePair("def first2(s):\n", "    return s[:2]", "    retrun")]
    tokens, attn, P, rmask = prompt_response_batch(TOK, [p.prompt for p in pairs] * 2,
                                                   [p.chosen for p in pairs] + [p.rejected for p in pairs])
    lp = sequence_logprobs(policy, tokens, attn, P, rmask)
    ref = sequence_logprobs(copy.deepcopy(policy), tokens, attn, P, rmask)
    loss, r_w, r_l = dpo_loss(lp[:2], lp[2:], ref[:2], ref[2:], beta=0.1)
    assert abs(loss.item() - math.log(2)) < 1e-6 and torch.all(r_w == 0)
    # the sequence log-prob is the sum of the response's token log-probs, EOS included
    assert rmask.sum(1).tolist() == [17, 17, 17, 11]
    chosen, rejected = preference_logprobs(policy, TOK, pairs)  # DPO's, public
    torch.testing.assert_close(torch.cat([chosen, rejected]), lp)


def test_dpo_training_raises_the_margin(policy):
    pairs = [PreferencePair(f"def add{k}(x):\n", f"    return x + {k}", f"    return x - {k}") for k in range(1, 10)]
    _, h = train_dpo(copy.deepcopy(policy), pairs, DPOConfig(iterations=8, batch_size=8, warmup_iterations=1), progress=False)
    assert abs(h["dpo/loss"][0] - math.log(2)) < 1e-5
    assert h["dpo/margin"][-1] > 0 and h["dpo/loss"][-1] < math.log(2)


def test_grpo_and_rloo_run_and_log_the_shared_metrics(policy):
    prompts = ["def add3(x):\n", "def gt5(x):\n"]
    for train, cfg in ((train_grpo, GRPOConfig(iterations=2, prompts_per_batch=2, group_size=3, max_new_tokens=8,
                                               num_minibatches=2, warmup_iterations=0)),
                       (train_grpo, GRPOConfig(iterations=2, prompts_per_batch=2, group_size=3, max_new_tokens=8,
                                               scale_rewards=False, length_normalise=False, kl_coef=0.0,
                                               warmup_iterations=0)),
                       (train_rloo, RLOOConfig(iterations=2, prompts_per_batch=2, group_size=3, max_new_tokens=8,
                                               warmup_iterations=0))):
        runs = [train(copy.deepcopy(policy), prompts, length_reward, cfg, seed=1, progress=False)[1] for _ in range(2)]
        h = runs[0]
        own = "grpo" if train is train_grpo else "rloo"  # each logs its update under its own name
        for name in ("rlhf/score", "rlhf/kl_to_ref", "gen/mean_length", "gen/min_length", "gen/max_length",
                     "gen/truncation_rate", f"{own}/policy_loss", f"{own}/grad_norm", f"{own}/learning_rate",
                     f"{own}/kl_divergence", f"{own}/clip_fraction", f"{own}/entropy", "rlhf/logprob_mismatch"):
            assert len(h[name]) == 2, name
        assert not any(name.startswith("ppo/") for name in h.updates)
        assert all(kl >= 0 for kl in h[f"{own}/kl_divergence"]) and h.algorithm == own
        assert h["rlhf/logprob_mismatch"][0] < 1e-4
        assert h["rlhf/score"] == runs[1]["rlhf/score"]  # same seed, same numbers


def test_configs_validate():
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)
    assert GRPOConfig(prompts_per_batch=8, group_size=4).batch_size == 32
    with pytest.raises(TypeError, match="group_size must be an int"):
        GRPOConfig(group_size=4.0)
    with pytest.raises(TypeError, match="learning_rate must be a number"):
        RLOOConfig(learning_rate="3e-4")
    with pytest.raises(ValueError, match="adam_eps must be in"):
        DPOConfig(adam_eps=0.0)
    with pytest.raises(ValueError, match="warmup_iterations must be an int in"):
        DPOConfig(iterations=5, warmup_iterations=5)
