"""A tiny causal GPT as a policy over tokens: sampling, log-probs, entropies, masks (chapter 6).

The model follows nanoGPT (Karpathy): token + position embeddings, pre-LayerNorm blocks of causal
self-attention and an MLP, a final LayerNorm, a language-model head tied to the token embedding,
plus one extra linear *value head* (zero-initialised, so the critic starts at V = 0 and cannot
disturb the policy's first updates; TRL's ``AutoModelForCausalLMWithValueHead`` does the same).

A batch is a prompt, left-padded to width P, followed by a response of fixed width R; ``L = P + R``.
Left padding makes every response start in column P, so a batch is generated one column at a
time.  Padded positions are excluded from attention by ``attention_mask`` and positions are
counted from the first real token, so a prompt's numbers do not depend on how much it was padded.

Indexing convention (the one TRL uses).  The logits at position ``P - 1 + t`` give the
distribution of response token ``t``; the value head at the same position is V(s_t), the value
of the state "prompt + first t response tokens".  :func:`response_logprobs` returns both as
``(B, R)`` tensors aligned with the response tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _checkpoint

from minippo.lm.tokenizer import CharTokenizer
from minippo.utils import check_range, check_types

__all__ = [
    "GPTConfig",
    "GPT",
    "Generation",
    "response_mask",
    "generate",
    "sample_responses",
    "response_logprobs",
    "logprob_mismatch",
    "sequence_positions",
]


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of the tiny GPT (defaults: about 0.1M parameters, nanoGPT's layout)."""

    vocab_size: int = 99  #: V; CharTokenizer().vocab_size is 99
    block_size: int = 48  #: the longest sequence L the position embedding covers
    n_layer: int = 2  #: transformer blocks
    n_head: int = 4  #: attention heads per block
    n_embd: int = 64  #: D, the residual width
    dropout: float = 0.0  #: 0 for RL: log-probs must be deterministic (Ziegler et al. 2019 turn it off)

    def __post_init__(self):
        check_types(self)
        check_range("vocab_size", self.vocab_size, 4)
        check_range("block_size", self.block_size, 2)
        check_range("n_layer", self.n_layer, 1)
        check_range("n_head", self.n_head, 1)
        check_range("n_embd", self.n_embd, 1)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        """D / number of heads."""
        return self.n_embd // self.n_head


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position i sees positions j <= i that are not padding.

    Chapter 6 ("Causal self-attention") derives it and checks it against a by-hand version. Per
    head, with queries, keys and values computed from the layer's input by ``c_attn``,

    .. math:: w_{ij} = \\operatorname{softmax}_j\\big(\\mathbf q_i^\\top \\mathbf k_j / \\sqrt{D_h}
              + m_{ij}\\big),
              \\qquad \\mathbf o_i = \\sum_j w_{ij} \\mathbf v_j,

    where the mask :math:`m_{ij}` is 0 if :math:`j \\le i` and token j is not PAD, and
    :math:`-\\infty` otherwise (built in :meth:`GPT.hidden` as ``allowed``); the heads' outputs are
    concatenated and ``c_proj`` maps them back into the residual stream (W_O).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # queries, keys, values at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # back into the residual stream
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """``x`` (B, Lq, D) holds the Lq new positions (Lq = L without a cache); ``allowed``
        (B, 1, Lq, L) says which of the L key positions (cached ones first) each may see.
        ``cache`` (generation only) keeps the keys and values of earlier positions so that each
        new token costs one position's work."""
        B, Lq, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)  # (B, Lq, D) each
        q = q.view(B, Lq, self.n_head, D // self.n_head).transpose(1, 2)  # (B, H, Lq, Dh)
        k = k.view(B, Lq, self.n_head, D // self.n_head).transpose(1, 2)  # (B, H, Lq, Dh)
        v = v.view(B, Lq, self.n_head, D // self.n_head).transpose(1, 2)  # (B, H, Lq, Dh)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)  # (B, H, L, Dh)
                v = torch.cat([cache["v"], v], dim=2)  # (B, H, L, Dh)
            cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, Lq, Dh)
        y = y.transpose(1, 2).reshape(B, Lq, D)  # (B, Lq, D)
        return self.c_proj(y)


class MLP(nn.Module):
    """The block's feed-forward part: widen to 4 D, GELU, project back (nanoGPT's names)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)  # back into the residual stream
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, L, D)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), allowed, cache)  # (B, L, D)
        return x + self.mlp(self.ln_2(x))  # (B, L, D)


def sequence_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted from the first real token: ``cumsum(mask) - 1``, 0 on left padding.

    Chapter 10 measures what a forward pass without them (GPT-2's default ``0, 1, 2, ...`` in
    every row) does to the log-probabilities of left-padded rows."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L)


class GPT(nn.Module):
    """Tiny causal transformer with a language-model head and a zero-initialised value head."""

    def __init__(self, config: GPTConfig = GPTConfig()):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying (Press & Wolf 2017), as in GPT-2
        self.value_head = nn.Linear(config.n_embd, 1)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Number of distinct parameters (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def hidden(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
               checkpoint: bool = False, cache: list | None = None) -> torch.Tensor:
        """Final hidden states ``(B, L, D)``.

        ``attention_mask`` (B, L) bool marks real tokens (default: all).  With ``checkpoint=True``
        each block's activations are recomputed in the backward pass instead of stored
        (``torch.utils.checkpoint``; chapter 8 measures the memory it saves).
        ``cache`` (used by :func:`generate`): a list with one dict per block; ``idx`` then holds
        only the positions not yet in the cache and ``attention_mask`` covers all positions.
        """
        B, Lq = idx.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(idx, dtype=torch.bool)  # (B, L)
        L = attention_mask.shape[1]
        if L > self.config.block_size:
            raise ValueError(f"sequence length {L} exceeds block_size {self.config.block_size}")
        if attention_mask.shape[0] != B or (cache is None and L != Lq):
            raise ValueError(f"shapes must match: idx {tuple(idx.shape)}, "
                             f"attention_mask {tuple(attention_mask.shape)}")
        causal = torch.ones(L, L, dtype=torch.bool, device=idx.device).tril()[L - Lq:]  # (Lq, L)
        # query i may see key j iff j <= i and j is a real token; every query sees itself, so a
        # padded row is never empty (its output is ignored anyway).
        itself = torch.eye(L, dtype=torch.bool, device=idx.device)[L - Lq:]  # (Lq, L)
        allowed = (causal & attention_mask[:, None, :]) | itself  # (B, Lq, L)
        allowed = allowed[:, None]  # (B, 1, Lq, L), broadcast over heads
        pos = sequence_positions(attention_mask)[:, L - Lq:]  # (B, Lq)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, Lq, D)
        for i, block in enumerate(self.blocks):
            if checkpoint and torch.is_grad_enabled():
                x = _checkpoint(block, x, allowed, use_reentrant=False)  # (B, Lq, D)
            else:
                x = block(x, allowed, None if cache is None else cache[i])  # (B, Lq, D)
        return self.ln_f(x)  # (B, Lq, D)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                checkpoint: bool = False, cache: list | None = None) -> torch.Tensor:
        """Next-token logits ``(B, L, V)``."""
        return self.lm_head(self.hidden(idx, attention_mask, checkpoint, cache))  # (B, L, V)

    def forward_with_value(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                           checkpoint: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, L, V)`` and the value head's output ``(B, L)`` from one trunk pass."""
        h = self.hidden(idx, attention_mask, checkpoint)  # (B, L, D)
        return self.lm_head(h), self.value_head(h).squeeze(-1)  # (B, L, V), (B, L)


def response_mask(response: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True for response tokens up to and including the first EOS; False after it.

    EOS itself is an action (the policy chose to stop), so it keeps its log-prob, its reward and
    its loss; the PAD tokens after it are not actions and get none of them.  A response without
    EOS (truncated) is True everywhere.
    """
    is_eos = (response == eos_id).long()  # (B, R)
    eos_before = is_eos.cumsum(dim=1) - is_eos  # (B, R): number of EOS strictly before t
    return eos_before == 0  # (B, R)


@dataclass
class Generation:
    """A batch of sampled responses and what the policy knew when it sampled them."""

    tokens: torch.Tensor  #: (B, P + R) left-padded prompt, then the response (PAD after EOS)
    attention_mask: torch.Tensor  #: (B, P + R) bool, real tokens
    response_mask: torch.Tensor  #: (B, R) bool, response tokens up to and including EOS
    logp: torch.Tensor  #: (B, R) log-prob of each sampled token at the sampling temperature (0 where masked)
    prompt_len: int  #: P, the column where responses start
    finished: torch.Tensor  #: (B,) bool, the response contains EOS (otherwise it was truncated)

    @property
    def response(self) -> torch.Tensor:
        """The response tokens ``(B, R)``."""
        return self.tokens[:, self.prompt_len:]

    @property
    def lengths(self) -> torch.Tensor:
        """``(B,)`` long: number of response tokens, EOS included."""
        return self.response_mask.sum(dim=1)

    @property
    def last_index(self) -> torch.Tensor:
        """``(B,)`` long: index in the response of the EOS token (or of the last token if truncated);
        the sequence-level score is added here."""
        return self.lengths - 1


def _top_k_logits(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """``logits`` (..., V) with all but the ``top_k`` largest of each row set to -inf (``None``:
    unchanged), so that sampling draws only among the k most likely tokens (Fan et al. 2018)."""
    if top_k is None:
        return logits
    kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1) the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def _check_top_k(top_k: int | None, vocab_size: int) -> None:
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool)
                              or not 1 <= top_k <= vocab_size):
        raise ValueError(f"top_k must be None or an int in [1, {vocab_size}] (the vocabulary), "
                         f"got {top_k!r}")


@torch.no_grad()
def generate(model: GPT, prompt: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
             eos_id: int, pad_id: int, temperature: float = 1.0,
             generator: torch.Generator | None = None, top_k: int | None = None) -> Generation:
    """Sample ``max_new_tokens`` response tokens for each left-padded prompt.

    Every row gets exactly ``R = max_new_tokens`` columns; after a row's first EOS its tokens are
    PAD and masked, so the batch stays rectangular (fixed-length generation, as TRL does).
    ``temperature`` divides the logits before sampling and the returned log-probs are those of
    the *sampling* distribution, so that they equal :func:`response_logprobs` at the same
    temperature (a test checks this; mismatching them is a classic RLHF bug).  ``temperature=0``
    is greedy decoding (log-probs then at temperature 1).  ``top_k`` samples among the k most
    likely tokens only; the log-probs are then those of that truncated distribution, which
    :func:`response_logprobs` reproduces with the same ``top_k`` (RL trainers sample the full
    distribution: ``top_k=None``).  ``generator`` makes sampling reproducible without touching
    the global seed.
    """
    check_range("temperature", temperature, 0.0)
    check_range("max_new_tokens", max_new_tokens, 1)
    _check_top_k(top_k, model.config.vocab_size)
    if prompt.shape != prompt_mask.shape:
        raise ValueError(f"shapes must match: prompt {tuple(prompt.shape)}, "
                         f"prompt_mask {tuple(prompt_mask.shape)}")
    was_training = model.training
    model.eval()
    B, P = prompt.shape
    tokens = torch.cat([prompt, torch.full((B, max_new_tokens), pad_id, dtype=torch.long)], dim=1)  # (B, L)
    mask = torch.cat([prompt_mask.bool(), torch.zeros(B, max_new_tokens, dtype=torch.bool)], dim=1)  # (B, L)
    logp = torch.zeros(B, max_new_tokens)  # (B, R)
    done = torch.zeros(B, dtype=torch.bool)  # (B,)
    cache = [{} for _ in model.blocks]  # keys/values of positions already processed
    for t in range(max_new_tokens):
        new = slice(0, P) if t == 0 else slice(P + t - 1, P + t)  # the prompt, then one token
        logits = model(tokens[:, new], mask[:, : P + t], cache=cache)[:, -1]  # (B, V)
        if temperature > 0:
            logprobs = F.log_softmax(_top_k_logits(logits / temperature, top_k), dim=-1)  # (B, V)
            tok = torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(1)  # (B,)
        else:
            logprobs = F.log_softmax(logits, dim=-1)  # (B, V)
            tok = logprobs.argmax(dim=-1)  # (B,)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)  # (B,)
        logp[:, t] = torch.where(done, 0.0, logprobs.gather(1, tok[:, None]).squeeze(1))
        tokens[:, P + t] = tok
        mask[:, P + t] = ~done
        done = done | (tok == eos_id)
    model.train(was_training)
    return Generation(tokens, mask, response_mask(tokens[:, P:], eos_id), logp, P, done)


def sample_responses(policy: GPT, prompts: Sequence[str], tokenizer: CharTokenizer,
                     max_new_tokens: int, temperature: float = 1.0,
                     generator: torch.Generator | None = None,
                     top_k: int | None = None) -> tuple[Generation, list[str]]:
    """Encode ``prompts`` (with BOS), left-pad, :func:`generate`; returns ``(generation, response
    texts)``.  Every language-model trainer samples through here."""
    ids, mask = tokenizer.pad_left([tokenizer.encode(p, bos=True) for p in prompts])  # (B, P)
    gen = generate(policy, ids, mask, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                   temperature=temperature, generator=generator, top_k=top_k)
    return gen, [tokenizer.decode(r) for r in gen.response]


def response_logprobs(model: GPT, tokens: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                      temperature: float = 1.0, with_value: bool = False, checkpoint: bool = False,
                      top_k: int | None = None):
    """Per-token log-probs, entropies (and values) of the response part of ``tokens``.

    Returns ``(logp, entropy, values)``, each ``(B, R)`` with ``R = L - prompt_len``; ``values`` is
    ``None`` unless ``with_value``.  Logits are divided by ``temperature`` exactly as in
    :func:`generate` (a temperature of 0 counts as 1), and truncated to the ``top_k`` most likely
    tokens as there.  Masked positions hold numbers too; callers apply ``response_mask``.

    ``logp[b, t] = log pi(y_t | x, y_<t)`` is read from the logits at position ``P - 1 + t``.
    """
    P = prompt_len
    if with_value:
        logits, values = model.forward_with_value(tokens, attention_mask, checkpoint)  # (B, L, V), (B, L)
        values = values[:, P - 1: -1]  # (B, R)
    else:
        logits, values = model(tokens, attention_mask, checkpoint), None  # (B, L, V)
    _check_top_k(top_k, model.config.vocab_size)
    logits = logits[:, P - 1: -1] / (temperature if temperature > 0 else 1.0)  # (B, R, V)
    logprobs = F.log_softmax(_top_k_logits(logits, top_k), dim=-1)  # (B, R, V)
    logp = logprobs.gather(2, tokens[:, P:, None]).squeeze(2)  # (B, R)
    p_logp = logprobs.exp() * logprobs  # (B, R, V)
    if top_k is not None:
        p_logp = p_logp.nan_to_num(0.0)  # 0 * -inf outside the top k: no contribution
    entropy = -p_logp.sum(dim=-1)  # (B, R)
    return logp, entropy, values


def logprob_mismatch(sampled_logp: torch.Tensor, recomputed_logp: torch.Tensor, mask: torch.Tensor) -> float:
    """``rlhf/logprob_mismatch``: the largest |log-prob recorded while sampling - log-prob recomputed
    by a forward pass| over the response tokens in ``mask`` (nats; 0 for an empty mask).

    The update's ratio divides by pi_old, so pi_old must be the policy that sampled: any mismatch
    beyond float rounding is a bug (a temperature applied on one side only, dropout left on, a
    position shift: chapters 8 and 10).
    """
    if sampled_logp.shape != recomputed_logp.shape or sampled_logp.shape != mask.shape:
        raise ValueError(f"shapes must match: sampled_logp {tuple(sampled_logp.shape)}, "
                         f"recomputed_logp {tuple(recomputed_logp.shape)}, mask {tuple(mask.shape)}")
    diff = (sampled_logp - recomputed_logp).detach()[mask.bool()].abs()  # (N,)
    return float(diff.max()) if diff.numel() else 0.0
