"""The tiny GPT and the character tokenizer as Hugging Face objects (chapter 10).

Import it explicitly, ``from minippo.lm import hf``: it needs ``transformers`` and ``tokenizers``
(``pip install "minippo[trl]"``), and ``import minippo`` never loads them.

* :func:`to_hf` / :func:`from_hf`: ``minippo.lm.GPT`` <-> ``transformers.GPT2LMHeadModel``, weight
  for weight.  The tiny GPT *is* a GPT-2: token and learned absolute position embeddings,
  pre-LayerNorm blocks (``eps = 1e-5``), fused query/key/value projection, exact (erf) GELU, a
  final LayerNorm and a head tied to the token embedding.  GPT-2 stores its linear layers as
  ``Conv1D`` with the weight transposed (``(in, out)``), the one thing the mapping has to undo.
  The value head has no GPT-2 counterpart; :func:`from_hf` gives it zeros, as a new GPT has.
* :func:`hf_tokenizer`: :class:`~minippo.lm.tokenizer.CharTokenizer` as a
  ``PreTrainedTokenizerFast``: a BPE model with one entry per character and *no merges* (so
  every character is one token, with minippo's ids), BOS added to every text by a template,
  and PAD, BOS and EOS distinct (the tokenizer module says why PAD must not be EOS).
* :func:`sample_with_logprobs` and :func:`logprob_mismatch`: the check of
  ``rlhf/logprob_mismatch`` (chapter 8) for a Hugging Face model: sample with ``generate``,
  keep the log-probabilities of the sampling distribution, score the same tokens again with a
  forward pass, and report the largest difference.

Position ids.  Prompts of different lengths are padded on the *left*, so the first real token
of a short prompt sits in column 3, say, not 0.  minippo counts positions from the first real
token (:func:`minippo.lm.model.sequence_positions`: ``cumsum(mask) - 1``), and so does
``transformers``' ``generate``.  A plain forward pass ``model(input_ids, attention_mask)`` does
not: GPT-2 then uses ``0, 1, 2, ...`` for every row, and each token of a left-padded row is read
at a position shifted by its row's padding.  :func:`positions_from_mask` is the fix: pass
``position_ids=positions_from_mask(attention_mask)``.  Chapter 10 measures what the shift costs.
"""
from __future__ import annotations

import os

# Nothing is downloaded at run time: models and tokenizers are built here. huggingface_hub reads
# the variable when it is first imported, so it is set before the imports below (a value the user
# set is kept).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import warnings  # noqa: E402

import torch  # noqa: E402

with warnings.catch_warnings():
    # transformers and datasets import tqdm.auto, which warns once in a notebook without
    # ipywidgets and then falls back to text bars; minippo's own bars are text bars anyway.
    warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: E402,F401
import torch.nn.functional as F  # noqa: E402
from tokenizers import Tokenizer, decoders, models, processors  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

from minippo.lm.model import GPT, GPTConfig, logprob_mismatch, response_mask, sequence_positions  # noqa: E402,F401
from minippo.lm.tokenizer import CharTokenizer  # noqa: E402
from minippo.utils import check_range, shifted_seed  # noqa: E402

__all__ = [
    "gpt2_config",
    "to_hf",
    "from_hf",
    "hf_tokenizer",
    "positions_from_mask",
    "sample_with_logprobs",
    "forward_logprobs",
    "logprob_mismatch",
]

#: nn.LayerNorm's default epsilon, which the tiny GPT uses (GPT-2's config default is the same).
LAYER_NORM_EPS = 1e-5


def gpt2_config(config: GPTConfig, tokenizer: CharTokenizer | None = None) -> GPT2Config:
    """The ``GPT2Config`` of a tiny GPT: same sizes, no dropout, exact GELU, tied head, minippo's special ids."""
    tokenizer = tokenizer or CharTokenizer()
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but config.vocab_size is {config.vocab_size}")
    return GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=4 * config.n_embd,
        activation_function="gelu",  # torch's exact erf GELU, nn.GELU(); GPT-2 itself uses the tanh approximation
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        layer_norm_epsilon=LAYER_NORM_EPS, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
    )


def _state_dict_pairs(model: GPT):
    """``(hf_name, minippo_tensor, transposed)`` for every GPT-2 weight; Conv1D weights are ``(in, out)``."""
    yield "transformer.wte.weight", model.tok_emb.weight, False
    yield "transformer.wpe.weight", model.pos_emb.weight, False
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}."
        for hf_name, layer in [("ln_1", block.ln_1), ("ln_2", block.ln_2)]:
            yield h + hf_name + ".weight", layer.weight, False
            yield h + hf_name + ".bias", layer.bias, False
        for hf_name, layer in [("attn.c_attn", block.attn.c_attn), ("attn.c_proj", block.attn.c_proj),
                               ("mlp.c_fc", block.mlp.c_fc), ("mlp.c_proj", block.mlp.c_proj)]:  # GPT-2's names
            yield h + hf_name + ".weight", layer.weight, True
            yield h + hf_name + ".bias", layer.bias, False
    yield "transformer.ln_f.weight", model.ln_f.weight, False
    yield "transformer.ln_f.bias", model.ln_f.bias, False


def to_hf(model: GPT, tokenizer: CharTokenizer | None = None) -> GPT2LMHeadModel:
    """A ``GPT2LMHeadModel`` with the weights of ``model`` (copied; the value head is dropped).

    Its logits equal ``model``'s on every input (a test checks equality, not closeness).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a minippo.lm.GPT, got {type(model).__name__}")
    hf = GPT2LMHeadModel(gpt2_config(model.config, tokenizer))
    state = {name: (w.detach().T if transposed else w.detach()).clone()
             for name, w, transposed in _state_dict_pairs(model)}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to transformer.wte.weight
    if missing or unexpected:
        raise RuntimeError(f"GPT-2 weights not mapped: missing {missing}, unexpected {unexpected}")
    hf.generation_config.pad_token_id = hf.config.pad_token_id
    return hf.eval()


def from_hf(hf_model: GPT2LMHeadModel) -> GPT:
    """The tiny GPT with the weights of a ``GPT2LMHeadModel`` (copied; a fresh, zero value head).

    The GPT-2 must have the tiny GPT's layout: tied head, exact GELU, LayerNorm eps 1e-5.
    """
    c = hf_model.config
    problems = [f"{name}={getattr(c, name)!r} (need {want!r})" for name, want in
                [("activation_function", "gelu"), ("layer_norm_epsilon", LAYER_NORM_EPS),
                 ("tie_word_embeddings", True), ("n_inner", 4 * c.n_embd)]
                if getattr(c, name) != want and not (name == "n_inner" and getattr(c, name) is None)]
    if problems:
        raise ValueError("hf_model's config does not describe a tiny GPT: " + ", ".join(problems))
    model = GPT(GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer,
                          n_head=c.n_head, n_embd=c.n_embd, dropout=0.0))
    hf_state = hf_model.state_dict()
    with torch.no_grad():
        for name, w, transposed in _state_dict_pairs(model):
            w.copy_(hf_state[name].T if transposed else hf_state[name])
    return model.eval()


def hf_tokenizer(tokenizer: CharTokenizer | None = None) -> PreTrainedTokenizerFast:
    """The character tokenizer as a ``PreTrainedTokenizerFast`` with minippo's ids.

    ``encode(text)`` gives ``[BOS] + CharTokenizer().encode(text)`` (the template adds BOS, as
    minippo's prompts have it); ``decode(ids, skip_special_tokens=True)`` gives the text back.
    Padding is on the left, as TRL and minippo pad prompts.  Built offline: no Hub download.
    """
    tokenizer = tokenizer or CharTokenizer()
    vocab = {s: i for i, s in enumerate(tokenizer.specials)}
    vocab.update({c: tokenizer.encode(c)[0] for c in tokenizer.chars})
    # BPE without merges: each character is looked up on its own; no pre-tokenizer, so spaces and
    # newlines are characters like any other, and the Fuse decoder joins tokens without separators.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, ignore_merges=True))
    backend.decoder = decoders.Fuse()
    pad, bos, eos = tokenizer.specials
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=pad, bos_token=bos, eos_token=eos,
                                   padding_side="left", model_max_length=10**6)
    ids = fast.convert_tokens_to_ids([pad, bos, eos])
    if ids != [tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id]:
        raise RuntimeError(f"special tokens got ids {ids}, expected PAD, BOS, EOS = 0, 1, 2")
    return fast


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``position_ids`` for a left-padded batch: minippo's :func:`~minippo.lm.model.sequence_positions`.

    ``cumsum(mask) - 1`` along each row, 0 on padding: the first real token is at position 0
    whatever the padding, as in ``generate``.  Pass it to a Hugging Face forward,
    ``model(input_ids, attention_mask=m, position_ids=positions_from_mask(m))``.
    """
    return sequence_positions(attention_mask)  # (B, L)


@torch.no_grad()
def sample_with_logprobs(hf_model: GPT2LMHeadModel, prompts: list[str], tokenizer: PreTrainedTokenizerFast,
                         max_new_tokens: int, temperature: float = 1.0, seed: int = 0):
    """Sample with ``hf_model.generate`` and keep the log-probabilities of the sampling distribution.

    Prompts are left-padded as TRL pads them.  Returns ``(tokens (B, P + R), attention_mask
    (B, P + R), P, logp (B, R), response_mask (B, R))``: ``logp`` is read from the scores
    ``generate`` sampled from (after temperature; ``top_k=0``, ``top_p=1``: the full softmax),
    ``response_mask`` is True up to and including the first EOS.
    """
    check_range("temperature", temperature, 0.0, low_open=True)
    check_range("max_new_tokens", max_new_tokens, 1)
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.random.fork_rng():  # generate samples from torch's global generator; leave it as it was
        torch.manual_seed(shifted_seed(seed))
        out = hf_model.generate(**batch, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                max_new_tokens=max_new_tokens, return_dict_in_generate=True, output_scores=True,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    P = batch["input_ids"].shape[1]
    response = out.sequences[:, P:]  # (B, R) with R <= max_new_tokens
    scores = torch.stack(out.scores, dim=1)  # (B, R, V): logits / temperature, as sampled from
    logp = F.log_softmax(scores.float(), dim=-1).gather(2, response[:, :, None]).squeeze(2)  # (B, R)
    mask = response_mask(response, tokenizer.eos_token_id)  # (B, R)
    attention_mask = torch.cat([batch["attention_mask"].bool(), mask], dim=1)  # (B, P + R)
    return out.sequences, attention_mask, P, logp * mask, mask


def forward_logprobs(hf_model: GPT2LMHeadModel, tokens: torch.Tensor, attention_mask: torch.Tensor,
                     prompt_len: int, temperature: float = 1.0, position_ids: torch.Tensor | None = None):
    """Per-token log-probs ``(B, R)`` of the response tokens from one forward pass, as trainers compute them.

    ``position_ids=None`` is what TRL 1.16's trainers pass (GPT-2 then counts positions from
    column 0 in every row); :func:`positions_from_mask` is the fix.
    """
    with torch.no_grad():
        logits = hf_model(input_ids=tokens, attention_mask=attention_mask.long(),
                          position_ids=position_ids).logits  # (B, L, V)
    logits = logits[:, prompt_len - 1: -1] / temperature  # (B, R, V)
    return F.log_softmax(logits.float(), dim=-1).gather(2, tokens[:, prompt_len:, None]).squeeze(2)  # (B, R)
