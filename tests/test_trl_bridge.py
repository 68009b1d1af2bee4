"""minippo.lm.trl_bridge: minippo's configs in TRL, the reward adapter, the position-ids fix, a short run."""
import tempfile

import pytest
import torch
import trl

import minippo as mp
from minippo.lm import trl_bridge

torch.set_num_threads(1)  # one thread, as in the chapters (spinning threads waste CPU on a shared machine)


def test_grpo_fields_make_the_same_run():
    cfg = mp.lm.GRPOConfig()
    args = trl_bridge.trl_args(cfg, tempfile.gettempdir())
    assert isinstance(args, trl.GRPOConfig)
    assert args.generation_batch_size == cfg.batch_size  # responses per minippo iteration
    assert args.num_generations == cfg.group_size and args.num_iterations == cfg.update_epochs
    assert args.steps_per_generation == cfg.num_minibatches
    assert args.max_steps == cfg.iterations * cfg.num_minibatches * cfg.update_epochs
    assert args.max_steps // (args.steps_per_generation * args.num_iterations) * args.generation_batch_size == (
        cfg.iterations * cfg.batch_size)  # the same number of sampled responses
    assert (args.beta, args.epsilon, args.loss_type, args.scale_rewards) == (cfg.kl_coef, cfg.clip_eps, "grpo", "group")
    assert args.logging_steps == cfg.num_minibatches * cfg.update_epochs  # one log row per iteration
    assert not args.bf16 and not args.gradient_checkpointing and args.use_cpu and args.top_k == 0
    dr = trl_bridge.trl_args(mp.lm.GRPOConfig(scale_rewards=False, length_normalise=False, kl_coef=0.0), "x")
    assert (dr.loss_type, dr.scale_rewards, dr.beta) == ("dr_grpo", "none", 0.0)


def test_rloo_fields_make_the_same_run():
    cfg = mp.lm.RLOOConfig()
    args = trl_bridge.trl_args(cfg, tempfile.gettempdir(), seed=3)
    assert isinstance(args, trl.RLOOConfig)
    assert args.per_device_train_batch_size == cfg.batch_size and args.max_steps == cfg.iterations
    assert args.num_iterations == 1 and not args.normalize_advantages and args.beta == cfg.kl_coef
    assert args.seed == mp.utils.shifted_seed(3)


def test_fields_reject_other_configs():
    with pytest.raises(TypeError, match="GRPOConfig"):
        trl_bridge.grpo_fields(mp.lm.RLOOConfig())
    with pytest.raises(TypeError, match="RLOOConfig"):
        trl_bridge.rloo_fields(mp.lm.GRPOConfig())
    with pytest.raises(TypeError, match="config must be"):
        trl_bridge.train_trl(mp.lm.GPT(), ["x"], None, mp.lm.RLHFConfig())


def test_reward_adapter_reads_eos_from_the_ids_and_logs_metrics():
    seen, logged = {}, {}

    def reward_fn(prompts, responses, finished):
        seen["finished"] = finished.tolist()
        return torch.tensor([1.0, 0.5]), {"code/avg_test_pass_rate": 0.75}

    reward = trl_bridge.TRLReward(reward_fn)
    out = reward(prompts=["a", "b"], completions=["x", "y"], completion_ids=[[5, 2], [5, 6]],
                 log_metric=lambda name, value: logged.update({name: value}), trainer_state=None)
    assert out == [1.0, 0.5] and seen["finished"] == [True, False]
    assert logged == {"code/avg_test_pass_rate": 0.75}
    assert reward.__name__ == "code_reward"


def test_positions_from_mask_wrapper():
    calls = {}

    def model(**inputs):
        calls.update(inputs)
        return "out"

    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert trl_bridge.PositionsFromMask(model)(input_ids=torch.zeros_like(mask), attention_mask=mask) == "out"
    assert calls["position_ids"].tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_fixed_trainer_scores_tokens_where_generate_sampled_them():
    """TRL's own log-prob function, through the fixed trainer, equals minippo's; the stock one is shifted."""
    task = mp.lm.make_task()
    torch.manual_seed(0)
    policy = mp.lm.GPT()
    with torch.no_grad():
        policy.pos_emb.weight.normal_(0, 1.0)
    cfg = mp.lm.GRPOConfig(iterations=2, prompts_per_batch=2, group_size=2, warmup_iterations=0)
    prompts = [s.prompt for s in task.train]
    tok = mp.lm.CharTokenizer()
    by_length = {len(p): p for p in prompts}  # one prompt of each length: 12 to 15 characters
    assert len(by_length) > 1
    ids, mask = tok.pad_left([tok.encode(p, bos=True) for p in by_length.values()])
    gen = mp.lm.generate(policy, ids, mask, 8, tok.eos_id, tok.pad_id, generator=mp.generator(0))
    ours, _, _ = mp.lm.response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_len)
    m = gen.response_mask
    mismatch = {}
    for fix in (True, False):
        with tempfile.TemporaryDirectory() as d, trl_bridge.quiet_transformers():
            trainer = trl_bridge.make_trainer(policy, prompts, task.reward_fn(), cfg, d, fix_positions=fix)
            with torch.no_grad():
                theirs, _, _ = trainer._get_per_token_logps_and_entropies(
                    trainer.model, gen.tokens, gen.attention_mask.long(), 8)
        mismatch[fix] = mp.lm.logprob_mismatch(gen.logp, theirs * m, m)
    assert mp.lm.logprob_mismatch(gen.logp, ours * m, m) < 1e-4
    assert mismatch[True] < 1e-4
    assert mismatch[False] > 0.1


def length_reward(prompts, responses, finished):
    """Scores that differ within a group for any policy (the code reward may give an untrained
    model the same score for every sample, hence zero advantages and no update)."""
    scores = torch.tensor([(len(r) % 5) / 4 for r in responses])
    return scores, {"code/avg_test_pass_rate": float(scores.mean())}


def test_short_trl_run_trains_and_reports_minippo_names():
    task = mp.lm.make_task()
    torch.manual_seed(0)
    sft = mp.lm.GPT()
    before = {k: v.clone() for k, v in sft.state_dict().items()}
    prompts = [s.prompt for s in task.train]
    for cfg in (mp.lm.GRPOConfig(iterations=2, prompts_per_batch=2, group_size=4, warmup_iterations=0),
                mp.lm.RLOOConfig(iterations=2, prompts_per_batch=2, group_size=4, warmup_iterations=0)):
        trained, history = trl_bridge.train_trl(sft, prompts, length_reward, cfg, seed=0)
        assert isinstance(trained, mp.lm.GPT) and len(history) == cfg.iterations
        assert history["responses"] == [cfg.batch_size * (i + 1) for i in range(cfg.iterations)]
        for name in ("rlhf/score", "reward", "rlhf/kl_to_ref", "code/avg_test_pass_rate", "time/train_cpu_seconds"):
            assert name in history.updates, name
        assert history["rlhf/score"] == history["reward"]
        own = "grpo" if isinstance(cfg, mp.lm.GRPOConfig) else "rloo"  # the prefix minippo's trainer logs under
        assert history[f"{own}/learning_rate"] == history["learning_rate"]
        assert not any(name.startswith("<algorithm>") for name in history.updates)
        assert any(not torch.equal(trained.state_dict()[k], before[k]) for k in before if "value_head" not in k)
    assert all(torch.equal(sft.state_dict()[k], before[k]) for k in before)  # the caller's model is untouched
