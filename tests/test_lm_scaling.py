"""minippo.lm.scaling: the memory arithmetic of chapter 10 against its published sources."""
import pytest

import minippo as mp
from minippo.lm import scaling


def test_zero_paper_figure_1():
    """Rajbhandari et al. (2020), Figure 1: 7.5B parameters, 64 GPUs, K = 12."""
    expected = {0: 120.0, 1: 31.4, 2: 16.6, 3: 1.9}
    for stage, gb in expected.items():
        total = sum(scaling.model_state_bytes(7.5e9, stage, 64).values()) / 1e9
        assert total == pytest.approx(gb, abs=0.06), stage


def test_sixteen_bytes_per_parameter_without_sharding():
    states = scaling.model_state_bytes(1e9)
    assert states == {"weights": 2e9, "gradients": 2e9, "adam": 12e9}
    assert scaling.model_state_bytes(1e9, zero_stage=3, n_gpus=1) == states  # one GPU: nothing to shard


def test_parameter_count_formula_matches_the_tiny_gpt():
    shape = scaling.TransformerShape(n_layer=2, d_model=64, n_head=4, vocab_size=99)  # GPTConfig()'s sizes
    actual = mp.lm.GPT().num_params()
    assert abs(shape.n_params - actual) / actual < 0.06  # biases, LayerNorms, positions, value head
    assert 1.0e9 < scaling.SHAPES["1B"].n_params < 1.3e9
    assert 6.5e9 < scaling.SHAPES["7B"].n_params < 7.0e9


def test_activation_formula_and_what_checkpointing_and_flash_attention_remove():
    shape = scaling.TransformerShape(n_layer=4, d_model=8, n_head=2, vocab_size=10)
    s, b, h, a, L = 16, 3, 8, 2, 4
    full = scaling.activation_bytes(shape, s, b, flash_attention=False)
    assert full == L * s * b * h * (34 + 5 * a * s / h)
    flash = scaling.activation_bytes(shape, s, b)
    assert flash == L * s * b * h * 34
    ckpt = scaling.activation_bytes(shape, s, b, checkpointing=True)
    assert ckpt == 2 * s * b * h * L + s * b * h * 34
    # gradient accumulation: activations are linear in the micro-batch
    assert scaling.activation_bytes(shape, s, 4 * b) == 4 * flash


def test_kv_cache():
    shape = scaling.SHAPES["7B"]
    assert scaling.kv_cache_bytes(shape, 1) == 4 * 32 * 4096  # 0.5 MiB per token for a 7B with full MHA


def test_rlhf_memory_adds_its_parts():
    shape = scaling.SHAPES["1B"]
    grpo = scaling.rlhf_memory(shape, seq_len=512, micro_batch=4)
    parts = {k: v for k, v in grpo.items() if k != "total"}
    assert grpo["total"] == pytest.approx(sum(parts.values()))
    assert grpo["reference"] == grpo["weights"] and grpo["critic"] == 0 and grpo["reward_model"] == 0
    ppo = scaling.rlhf_memory(shape, seq_len=512, micro_batch=4, critic=True, reward_model=shape)
    assert ppo["critic"] == pytest.approx(grpo["weights"] + grpo["gradients"] + grpo["adam"] + grpo["activations"])
    assert ppo["reward_model"] == grpo["reference"]
    sharded = scaling.rlhf_memory(shape, seq_len=512, micro_batch=4, zero_stage=3, n_gpus=8)
    assert sharded["reference"] == pytest.approx(grpo["reference"] / 8)
    assert sharded["activations"] == grpo["activations"]  # data parallelism does not shard activations


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="zero_stage"):
        scaling.model_state_bytes(1e9, zero_stage=4)
    with pytest.raises(ValueError, match="n_gpus"):
        scaling.model_state_bytes(1e9, n_gpus=0)
    with pytest.raises(ValueError, match="micro_batch"):
        scaling.activation_bytes(scaling.SHAPES["1B"], 10, 0)
    with pytest.raises(ValueError, match="d_model"):
        scaling.TransformerShape(n_layer=1, d_model=0, n_head=1, vocab_size=1)
