"""Tokenizer and tiny GPT: special tokens, causal masking, padding, generation, log-probs."""
import pytest
import torch

from minippo.lm.model import GPT, GPTConfig, generate, response_logprobs, response_mask
from minippo.lm.tokenizer import CharTokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size))
    with torch.no_grad():  # a random but non-trivial value head, so value tests mean something
        m.value_head.weight.normal_(0, 0.1)
    return m


def test_tokenizer_special_tokens_are_distinct_and_roundtrip(tok):
    assert len({tok.pad_id, tok.bos_id, tok.eos_id}) == 3
    text = "def add3(x):\n    return x + 3"
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == text
    assert tok.decode(ids + tok.encode("junk")) == text  # stops at the first EOS
    assert tok.vocab_size == 99
    with pytest.raises(ValueError, match="'é'"):
        tok.encode("café")
    with pytest.raises(ValueError, match=r"ids must be token ids in \[0, 99\), got 99"):
        tok.decode([tok.bos_id, 99])
    with pytest.raises(ValueError, match=r"got -1"):
        tok.decode([-1])


def test_train_sft_refuses_no_examples():
    from minippo.lm.sft import SFTConfig, train_sft

    with pytest.raises(ValueError, match="examples must not be empty"):
        train_sft([], SFTConfig(iterations=1, warmup_iterations=0), progress=False)


def test_padding_helpers(tok):
    ids, mask = tok.pad_left([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[True] * 3, [False, False, True]]
    ids, mask = tok.pad_right([[5], [6, 7]], width=3)
    assert ids.tolist() == [[5, 0, 0], [6, 7, 0]]


def test_param_count_in_range(model):
    assert 100_000 <= model.num_params() <= 300_000


def test_config_validation():
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)


def test_causal_masking_later_tokens_do_not_change_earlier_logits(model, tok):
    x = torch.randint(3, tok.vocab_size, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(3, tok.vocab_size, (2, 8))
    with torch.no_grad():
        lx, vx = model.forward_with_value(x)
        ly, vy = model.forward_with_value(y)
    torch.testing.assert_close(lx[:, :12], ly[:, :12])
    torch.testing.assert_close(vx[:, :12], vy[:, :12])
    assert not torch.allclose(lx[:, 12:], ly[:, 12:])


def test_left_padding_does_not_change_the_numbers(model, tok):
    ids = tok.encode("def sub4(x):\n", bos=True)
    alone = torch.tensor([ids])
    padded, mask = tok.pad_left([ids, ids + [5, 6, 7]])
    with torch.no_grad():
        a = model(alone)[0]
        b = model(padded, mask)[0, 3:]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_value_head_starts_at_zero(tok):
    m = GPT(GPTConfig(vocab_size=tok.vocab_size))
    _, v = m.forward_with_value(torch.randint(3, 90, (3, 10)))
    assert torch.all(v == 0)


def test_response_mask_includes_first_eos_and_nothing_after():
    eos = 2
    resp = torch.tensor([[5, 6, eos, 0, 0], [5, eos, 7, eos, 0], [5, 6, 7, 8, 9]])
    m = response_mask(resp, eos)
    assert m.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_generation_fixed_length_pad_after_eos_and_reproducible(model, tok):
    prompts = [tok.encode(f"def add{k}(x):\n", bos=True) for k in range(1, 9)]
    ids, mask = tok.pad_left(prompts)
    g1 = generate(model, ids, mask, 12, tok.eos_id, tok.pad_id, temperature=1.5,
                  generator=torch.Generator().manual_seed(3))
    g2 = generate(model, ids, mask, 12, tok.eos_id, tok.pad_id, temperature=1.5,
                  generator=torch.Generator().manual_seed(3))
    assert torch.equal(g1.tokens, g2.tokens)
    assert g1.tokens.shape == (8, ids.shape[1] + 12) and g1.prompt_len == ids.shape[1]
    r = g1.response
    assert torch.all(r[~g1.response_mask] == tok.pad_id)
    assert torch.all(g1.logp[~g1.response_mask] == 0)
    assert torch.equal(g1.attention_mask[:, g1.prompt_len:], g1.response_mask)
    has_eos = (r == tok.eos_id).any(1)
    assert torch.equal(g1.finished, has_eos)
    # the last unmasked token is the EOS for finished rows
    last = r.gather(1, g1.last_index[:, None]).squeeze(1)
    assert torch.all(last[g1.finished] == tok.eos_id)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_logp_equals_recomputed_logp(model, tok, temperature):
    prompts = [tok.encode(s, bos=True) for s in ["def a(x):\n", "def first3(s):\n", "x"]]
    ids, mask = tok.pad_left(prompts)
    g = generate(model, ids, mask, 10, tok.eos_id, tok.pad_id, temperature=temperature,
                 generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logp, ent, v = response_logprobs(model, g.tokens, g.attention_mask, g.prompt_len,
                                         temperature=temperature, with_value=True)
    diff = (logp - g.logp)[g.response_mask].abs().max()
    assert diff < 1e-5
    assert v.shape == logp.shape == ent.shape == g.response.shape
    assert torch.all(ent[g.response_mask] > 0)


def test_greedy_generation_is_deterministic(model, tok):
    ids, mask = tok.pad_left([tok.encode("def mul2(x):\n", bos=True)] * 2)
    g = generate(model, ids, mask, 8, tok.eos_id, tok.pad_id, temperature=0.0)
    assert torch.equal(g.tokens[0], g.tokens[1])


def test_activation_checkpointing_gives_the_same_gradient(model, tok):
    x = torch.randint(3, tok.vocab_size, (4, 16))
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        logits, v = model.forward_with_value(x, checkpoint=ckpt)
        (logits.logsumexp(-1).mean() + v.mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    model.zero_grad()


def test_generate_top_k_samples_among_the_k_most_likely_tokens(model, tok):
    ids, mask = tok.pad_left([tok.encode("def add3(x):\n", bos=True), tok.encode("3:", bos=True)] * 4)
    g = generate(model, ids, mask, 10, tok.eos_id, tok.pad_id, temperature=0.8,
                 generator=torch.Generator().manual_seed(0), top_k=3)
    P, m = g.prompt_len, g.response_mask
    with torch.no_grad():
        logits = model(g.tokens, g.attention_mask)[:, P - 1:-1]  # (B, R, V)
        logp, entropy, _ = response_logprobs(model, g.tokens, g.attention_mask, P, 0.8, top_k=3)
    in_top = (logits.topk(3, dim=-1).indices == g.response[..., None]).any(-1)  # (B, R)
    assert in_top[m].all()
    torch.testing.assert_close(logp[m], g.logp[m])  # the log-probs of the truncated distribution
    assert torch.isfinite(entropy).all() and (entropy <= torch.log(torch.tensor(3.0)) + 1e-5).all()
    greedy = generate(model, ids, mask, 10, tok.eos_id, tok.pad_id, temperature=0.0)
    top1 = generate(model, ids, mask, 10, tok.eos_id, tok.pad_id, temperature=1.0, top_k=1)
    assert torch.equal(top1.tokens, greedy.tokens)
    for bad in (0, tok.vocab_size + 1, 2.5):
        with pytest.raises(ValueError, match="top_k must be None or an int"):
            generate(model, ids, mask, 4, tok.eos_id, tok.pad_id, top_k=bad)


def test_layers_are_named_not_indexed(model):
    names = {name for name, _ in model.named_parameters()}
    assert {"blocks.0.attn.c_attn.weight", "blocks.0.attn.c_proj.weight", "blocks.0.mlp.c_fc.weight",
            "blocks.0.mlp.c_proj.weight"} <= names
    assert not any(name.split(".")[-2].isdigit() for name in names)  # no Sequential indices
    fresh = GPT(GPTConfig())
    depth_std = 0.02 / (2 * fresh.config.n_layer) ** 0.5  # GPT-2's scaled residual projections
    for block in fresh.blocks:
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            assert abs(float(proj.weight.detach().std()) - depth_std) < 0.25 * depth_std
        assert abs(float(block.mlp.c_fc.weight.detach().std()) - 0.02) < 0.005
