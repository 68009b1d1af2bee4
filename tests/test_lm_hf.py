"""minippo.lm.hf: the tiny GPT as a GPT2LMHeadModel and back, the char tokenizer as a fast tokenizer."""
import subprocess
import sys

import pytest
import torch

import minippo as mp
from minippo.lm import hf

torch.set_num_threads(1)  # one thread, as in the chapters (spinning threads waste CPU on a shared machine)


def perturbed_gpt(seed=0):
    """A tiny GPT whose weights are not the initial ones (LayerNorms and biases away from 1 and 0)."""
    torch.manual_seed(seed)
    model = mp.lm.GPT()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def left_padded_batch(tok, prompts):
    ids, mask = tok.pad_left([tok.encode(p, bos=True) for p in prompts])
    return ids, mask


def test_import_minippo_does_not_import_transformers():
    code = "import sys, minippo, minippo.lm; assert 'transformers' not in sys.modules and 'trl' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_logits_equal_unpadded_and_left_padded():
    model = perturbed_gpt()
    hf_model = hf.to_hf(model)
    idx = torch.randint(3, 99, (4, 30))
    with torch.no_grad():
        assert torch.equal(model(idx), hf_model(idx).logits)
        tok = mp.lm.CharTokenizer()
        ids, mask = left_padded_batch(tok, ["def a(x):\n", "def first2(s):\n    ret", "x"])
        ours = model(ids, mask)
        theirs = hf_model(ids, attention_mask=mask.long(), position_ids=hf.positions_from_mask(mask)).logits
    assert (ours - theirs)[mask].abs().max() < 1e-5  # padded rows' outputs are never read


def test_round_trip_keeps_every_weight_and_zeroes_the_value_head():
    model = perturbed_gpt(1)
    back = hf.from_hf(hf.to_hf(model))
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        if name.startswith("value_head"):
            assert not theirs[name].any()
        else:
            assert torch.equal(ours[name], theirs[name]), name
    assert back.lm_head.weight is back.tok_emb.weight  # still tied


def test_to_hf_copies_and_ties():
    model = perturbed_gpt()
    hf_model = hf.to_hf(model)
    assert hf_model.lm_head.weight is hf_model.transformer.wte.weight
    with torch.no_grad():
        hf_model.transformer.wte.weight.zero_()
    assert model.tok_emb.weight.abs().sum() > 0  # the copy is independent
    assert hf_model.config.pad_token_id == 0 and hf_model.config.bos_token_id == 1 and hf_model.config.eos_token_id == 2


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="model must be a minippo.lm.GPT"):
        hf.to_hf(torch.nn.Linear(2, 2))
    hf_model = hf.to_hf(mp.lm.GPT())
    hf_model.config.activation_function = "gelu_new"
    with pytest.raises(ValueError, match="activation_function"):
        hf.from_hf(hf_model)
    with pytest.raises(ValueError, match="vocab_size"):
        hf.gpt2_config(mp.lm.GPTConfig(vocab_size=50))


def test_tokenizer_matches_char_tokenizer():
    tok = mp.lm.CharTokenizer()
    fast = hf.hf_tokenizer(tok)
    task = mp.lm.make_task()
    for prompt, body in task.corpus[:200]:
        text = prompt + body
        ids = fast(text)["input_ids"]
        assert ids == tok.encode(text, bos=True)
        assert fast.decode(tok.encode(body, eos=True) + [tok.pad_id] * 3, skip_special_tokens=True) == body
    assert (fast.pad_token_id, fast.bos_token_id, fast.eos_token_id) == (0, 1, 2)
    assert len(fast) == tok.vocab_size
    batch = fast(["ab", "abcd"], padding=True, return_tensors="pt")
    ids, mask = tok.pad_left([tok.encode("ab", bos=True), tok.encode("abcd", bos=True)])
    assert torch.equal(batch["input_ids"], ids) and torch.equal(batch["attention_mask"].bool(), mask)


def test_generate_logprobs_agree_with_minippo_and_the_position_shift_breaks_them():
    model = mp.lm.GPT()  # untrained: its samples are long and varied
    torch.manual_seed(0)
    with torch.no_grad():
        model.pos_emb.weight.normal_(0, 1.0)  # make positions matter, as training does
    hf_model, fast = hf.to_hf(model), hf.hf_tokenizer()
    prompts = ["def add3(x):\n", "def first2(s):\n", "x", "def mul4(x):\n"]
    tokens, attn, P, logp, mask = hf.sample_with_logprobs(hf_model, prompts, fast, max_new_tokens=10, seed=0)
    assert tokens.shape[1] == attn.shape[1] and logp.shape == mask.shape
    ours, _, _ = mp.lm.response_logprobs(model, tokens, attn, P)  # minippo's forward, positions from the mask
    assert hf.logprob_mismatch(logp, ours * mask, mask) < 1e-4
    fixed = hf.forward_logprobs(hf_model, tokens, attn, P, position_ids=hf.positions_from_mask(attn))
    assert hf.logprob_mismatch(logp, fixed * mask, mask) < 1e-4
    stock = hf.forward_logprobs(hf_model, tokens, attn, P)  # TRL 1.16's call: no position_ids
    assert hf.logprob_mismatch(logp, stock * mask, mask) > 0.1
    # the unpadded row (the longest prompt) is not shifted
    longest = attn[:, :P].sum(1).argmax()
    row = mask[longest]
    assert (logp[longest] - stock[longest])[row].abs().max() < 1e-4


def test_sample_with_logprobs_is_seeded_and_leaves_the_global_generator_alone():
    hf_model, fast = hf.to_hf(mp.lm.GPT()), hf.hf_tokenizer()
    state = torch.random.get_rng_state()
    a = hf.sample_with_logprobs(hf_model, ["ab", "c"], fast, 6, seed=3)
    b = hf.sample_with_logprobs(hf_model, ["ab", "c"], fast, 6, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="temperature"):
        hf.sample_with_logprobs(hf_model, ["ab"], fast, 6, temperature=0.0)


def test_logprob_mismatch():
    a, b = torch.zeros(2, 3), torch.tensor([[0.0, 0.5, 9.0], [0.0, -0.25, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert mp.lm.logprob_mismatch(a, b, mask) == 0.5
    assert mp.lm.logprob_mismatch(a, b, torch.zeros_like(mask)) == 0.0
    with pytest.raises(ValueError, match="shapes must match"):
        mp.lm.logprob_mismatch(a, b[:, :2], mask)


def test_rotary_model_does_not_notice_the_shift():
    """Chapter 10's claim: with rotary positions (a tiny random Llama, built offline) a left-padded
    row scores the same with or without position_ids; the tiny GPT (absolute positions) does not."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=99, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=48,
                                         pad_token_id=0, bos_token_id=1, eos_token_id=2)).eval()
    gpt2 = hf.to_hf(perturbed_gpt())
    with torch.no_grad():
        gpt2.transformer.wpe.weight.normal_(0, 1.0)
    ids, mask = left_padded_batch(mp.lm.CharTokenizer(), ["def first2(s):\n    re", "def a(x):\n"])
    am, pos = mask.long(), hf.positions_from_mask(mask)
    gaps = {}
    with torch.no_grad():
        for name, model in [("rotary", llama), ("absolute", gpt2)]:
            shifted = model(input_ids=ids, attention_mask=am).logits  # positions 0, 1, 2, ... in every row
            right = model(input_ids=ids, attention_mask=am, position_ids=pos).logits
            gaps[name] = float((shifted - right)[mask].abs().max())
    assert gaps["rotary"] < 1e-4, gaps
    assert gaps["absolute"] > 0.1, gaps
