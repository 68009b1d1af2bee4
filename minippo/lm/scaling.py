"""Memory arithmetic for RLHF at scale: what a 1B or a 7B policy needs per GPU (chapter 10).

The tiny GPT trains on one CPU thread; a real policy does not fit on one GPU without thinking.
Three published formulas give the bytes, and :func:`rlhf_memory` adds them up for an RLHF run:

* :func:`model_state_bytes`: mixed-precision Adam keeps, per trained parameter, 2 bytes of 16-bit
  weights, 2 of 16-bit gradients and 12 of optimizer state (a 32-bit master copy of the weights
  and Adam's two moments): 16 bytes in all.  ZeRO (Rajbhandari et al. 2020, Sections 3.1 and 5,
  Figure 1) shards the optimizer state over the ``n_gpus`` data-parallel GPUs (stage 1), then the
  gradients (stage 2), then the weights (stage 3; PyTorch's FSDP "full shard" is the same idea).
* :func:`activation_bytes`: a transformer layer keeps ``L B D (34 + 5 n_head L / D)`` bytes of
  16-bit activations for the backward pass (Korthikanti et al. 2022, Section 4.1, who write
  ``s b h (34 + 5 a s / h)``; ``L`` tokens per sequence, ``B`` sequences per micro-batch, ``D``
  width, ``n_head`` heads).  ``5 n_head L / D`` is the attention matrix, which a fused ("flash")
  attention kernel never stores.  Full activation checkpointing (Chen et al. 2016; chapter 8)
  keeps only each layer's input, ``2 L B D`` bytes, and rebuilds one layer at a time during the
  backward pass.
* :func:`kv_cache_bytes`: generation keeps the keys and values of every layer for every token
  generated so far, ``2 x 2 n_layer D`` bytes per token in 16 bits (without grouped-query
  attention).

Gradient accumulation does not appear in any formula, and that is the point: the activations
depend on the *micro*-batch ``B``, so ``n_micro`` micro-batches of ``B`` accumulate the gradient
of a batch of ``n_micro B`` with the activation memory of ``B`` (chapter 8 shows how to weight
them).
"""
from __future__ import annotations

from dataclasses import dataclass

from minippo.utils import check_range

__all__ = ["TransformerShape", "SHAPES", "model_state_bytes", "activation_bytes", "kv_cache_bytes", "rlhf_memory"]

GB = 1e9  #: the unit of the tables (ZeRO's paper uses 10^9 bytes)


@dataclass(frozen=True)
class TransformerShape:
    """A GPT-style decoder: ``n_layer`` blocks of width ``d_model`` with ``n_head`` heads, an MLP of
    width ``4 d_model`` and a tied ``vocab_size`` x ``d_model`` embedding (the tiny GPT's layout)."""

    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int

    def __post_init__(self):
        for name in ("n_layer", "d_model", "n_head", "vocab_size"):
            check_range(name, getattr(self, name), 1)

    @property
    def n_params(self) -> int:
        """``12 n_layer D^2 + V D``: 4 D^2 in attention and 8 D^2 in the MLP per layer, plus the
        embedding (biases, LayerNorms and position embeddings are a fraction of a percent at this size)."""
        return 12 * self.n_layer * self.d_model ** 2 + self.vocab_size * self.d_model


#: Two sizes on the tiny GPT's layout: ~1.1 and ~6.6 billion parameters (the 7B has the layer
#: count and width of Llama-2-7B; the vocabulary is GPT-2's).
SHAPES = {
    "1B": TransformerShape(n_layer=20, d_model=2048, n_head=16, vocab_size=50257),
    "7B": TransformerShape(n_layer=32, d_model=4096, n_head=32, vocab_size=50257),
}


def model_state_bytes(n_params: float, zero_stage: int = 0, n_gpus: int = 1) -> dict[str, float]:
    """Bytes per GPU of a model trained with mixed-precision Adam: ``weights``, ``gradients``, ``adam``.

    .. math:: (2 + 2 + 12)\\,\\Psi \\text{ bytes, with } 12\\Psi/n_\\text{GPU} \\text{ (stage} \\ge 1),
              \\; 2\\Psi/n_\\text{GPU} \\text{ gradients (stage} \\ge 2),
              \\; 2\\Psi/n_\\text{GPU} \\text{ weights (stage 3)}

    for :math:`\\Psi` = ``n_params`` parameters and :math:`n_\\text{GPU}` = ``n_gpus``.

    Source: Rajbhandari et al. (2020), "ZeRO", Sections 3.1 and 5 and Figure 1 (7.5B parameters
    on 64 GPUs: 120, 31.4, 16.6 and 1.9 GB for stages 0-3).  Chapter 10.
    """
    check_range("n_params", n_params, 0, low_open=True)
    check_range("n_gpus", n_gpus, 1)
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    return {"weights": 2 * n_params / (n_gpus if zero_stage >= 3 else 1),
            "gradients": 2 * n_params / (n_gpus if zero_stage >= 2 else 1),
            "adam": 12 * n_params / (n_gpus if zero_stage >= 1 else 1)}


def activation_bytes(shape: TransformerShape, seq_len: int, micro_batch: int, checkpointing: bool = False,
                     flash_attention: bool = True) -> float:
    """Bytes of 16-bit activations a forward pass keeps for the backward pass of one micro-batch.

    .. math:: n_\\text{layer}\\, L B D \\big(34 + 5 n_\\text{head} L / D\\big)
              \\quad\\text{or, checkpointed,}\\quad
              2 n_\\text{layer}\\, L B D + L B D \\big(34 + 5 n_\\text{head} L / D\\big)

    for :math:`L` = ``seq_len`` tokens, :math:`B` = ``micro_batch`` sequences, width :math:`D` and
    :math:`n_\\text{head}` heads (Korthikanti et al. write ``s``, ``b``, ``h``, ``a``; the second
    form: every layer's input, plus one layer rebuilt at a time).  ``flash_attention`` drops the
    ``5 n_head L / D`` term (the attention matrix is never stored).  The logits are not
    included (:func:`rlhf_memory` adds them).  Source: Korthikanti et al. (2022), "Reducing
    Activation Recomputation in Large Transformer Models", Section 4.1 (activations per layer)
    and Section 5 (full recomputation).  Chapter 10.
    """
    check_range("seq_len", seq_len, 1)
    check_range("micro_batch", micro_batch, 1)
    s, b, h, a = seq_len, micro_batch, shape.d_model, shape.n_head
    per_layer = s * b * h * (34 + (0 if flash_attention else 5 * a * s / h))
    if checkpointing:
        return 2 * s * b * h * shape.n_layer + per_layer
    return per_layer * shape.n_layer


def kv_cache_bytes(shape: TransformerShape, tokens: int) -> float:
    """Bytes of the 16-bit key/value cache for ``tokens`` tokens (all sequences of a generation
    batch together): a key and a value vector of width ``D`` per layer and token, ``4 n_layer D``
    bytes per token (multi-head attention; grouped-query attention divides it by the heads per group)."""
    check_range("tokens", tokens, 0)
    return 2 * 2 * shape.n_layer * shape.d_model * tokens


def rlhf_memory(shape: TransformerShape, *, seq_len: int, micro_batch: int, n_gpus: int = 1, zero_stage: int = 0,
                checkpointing: bool = False, flash_attention: bool = True, reference: bool = True,
                reward_model: TransformerShape | None = None, critic: bool = False) -> dict[str, float]:
    """Bytes per GPU of one RLHF training step, part by part, and their ``total``.

    The trained policy: ``weights``, ``gradients``, ``adam`` (:func:`model_state_bytes`),
    ``activations`` (:func:`activation_bytes`) and ``logits`` (float32, ``4 L B V``: what the
    log-softmax over the vocabulary reads; a fused, chunked head avoids it, as TRL's does).
    Frozen models in 16 bits, sharded under ZeRO stage 3 like the policy: the ``reference``
    (same shape, ``2 Psi``) and a learned ``reward_model`` (its own shape; None for a program
    such as unit tests).  ``critic=True`` (PPO) adds a second trained model of the policy's shape
    with its states and activations.  Forward passes of frozen models keep no activations.
    Chapter 10 tabulates it for 1B and 7B.
    """
    shard = n_gpus if zero_stage >= 3 else 1
    states = model_state_bytes(shape.n_params, zero_stage, n_gpus)
    acts = activation_bytes(shape, seq_len, micro_batch, checkpointing, flash_attention)
    out = {**states, "activations": acts, "logits": 4.0 * seq_len * micro_batch * shape.vocab_size,
           "reference": 2 * shape.n_params / shard if reference else 0.0,
           "reward_model": 2 * reward_model.n_params / shard if reward_model is not None else 0.0,
           "critic": sum(states.values()) + acts if critic else 0.0}
    out["total"] = sum(out.values())
    return out
