"""Supervised fine-tuning: teach the tiny GPT to answer prompts by imitation (chapters 6 and 8).

SFT is the first stage of the InstructGPT pipeline (Ouyang et al. 2022, Section 3.5): maximise
the log-likelihood of demonstration responses given their prompts,

.. math:: \\mathcal L_{SFT}(\\theta) = -\\frac{1}{\\sum_i |y_i|} \\sum_i \\sum_{t} \\log \\pi_\\theta(y_{i,t} \\mid x_i, y_{i,<t})

where the sum runs over response tokens *and* the final EOS (so the model learns to stop) but not
over prompt tokens (the prompt is given, not predicted).  The learning rate warms up linearly and
then decays on a cosine (``minippo.schedules.warmup_cosine``; the source material's
``SequentialLR(LinearLR, CosineAnnealingLR)``).

The SFT model is both the starting policy and the frozen *reference* that RLHF's KL penalty keeps
the policy close to.  :func:`pretrained_sft` caches it in a temp directory keyed by every config
and the seed, so later chapters can reuse it; without the cache it is retrained identically.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm  # text bar: tqdm.auto needs ipywidgets and warns without it

from minippo.history import History
from minippo.lm.model import GPT, GPTConfig
from minippo.lm.tokenizer import CharTokenizer
from minippo.optim import (adamw, check_optimizer_fields, optimizer_step, set_learning_rate,
                           warmup_cosine_learning_rate)
from minippo.utils import check_finite, check_range, check_types, generator, set_seed, shifted_seed

__all__ = ["SFTConfig", "sft_batch", "sft_loss", "train_sft", "pretrained_sft", "cache_dir"]


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning of the tiny GPT on (prompt, response) pairs."""

    iterations: int = 800  #: optimizer steps (measured: fewer leave the digit-copying half learnt)
    batch_size: int = 32  #: examples per step
    learning_rate: float = 3e-3  #: peak LR; small transformers tolerate 1e-3..5e-3 (nanoGPT's char model: 1e-3)
    warmup_iterations: int = 20  #: linear warm-up steps, then cosine decay
    min_learning_rate: float = 3e-4  #: cosine floor (nanoGPT: peak / 10)
    weight_decay: float = 0.01  #: AdamW weight decay of the weight matrices (the source material's value)
    max_grad_norm: float = 1.0  #: global gradient-norm clip (nanoGPT)
    adam_eps: float = 1e-8  #: AdamW's epsilon (torch's and nanoGPT's default)
    model: GPTConfig = field(default_factory=GPTConfig)  #: sizes of the GPT that is trained

    def __post_init__(self):
        check_types(self)
        check_optimizer_fields(self)
        check_range("batch_size", self.batch_size, 1)


def sft_batch(tokenizer: CharTokenizer, examples: list[tuple[str, str]]):
    """Right-padded ``BOS + prompt + response + EOS`` rows.

    Returns ``(tokens (B, L), attention_mask (B, L), loss_mask (B, L))``; ``loss_mask[b, i]`` is
    True where token ``i`` is a response token or the final EOS, i.e. a token the model must
    *predict* (from the logits at ``i - 1``).
    """
    rows, masks = [], []
    for prompt, response in examples:
        p = tokenizer.encode(prompt, bos=True)
        r = tokenizer.encode(response, eos=True)
        rows.append(p + r)
        masks.append([False] * len(p) + [True] * len(r))
    tokens, attention_mask = tokenizer.pad_right(rows)  # (B, L)
    loss_mask = torch.zeros_like(attention_mask)  # (B, L)
    for b, m in enumerate(masks):
        loss_mask[b, : len(m)] = torch.tensor(m)
    return tokens, attention_mask, loss_mask


def sft_loss(model: GPT, tokens: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
             checkpoint: bool = False) -> torch.Tensor:
    """Mean next-token cross-entropy over the tokens marked by ``loss_mask`` (module docstring)."""
    logits = model(tokens, attention_mask, checkpoint)[:, :-1]  # (B, L-1, V): predicts tokens 1..L-1
    target = tokens[:, 1:]  # (B, L-1)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    m = loss_mask[:, 1:].reshape(-1).to(nll.dtype)  # (B*(L-1),)
    return (nll * m).sum() / m.sum()


def train_sft(examples: list[tuple[str, str]], config: SFTConfig = SFTConfig(),
              tokenizer: CharTokenizer | None = None, *, model: GPT | None = None, seed: int = 0,
              progress: bool = True) -> tuple[GPT, History]:
    """Fit a (new, or the given) GPT to ``examples`` by SFT; returns ``(model, history)``.

    Each step draws ``batch_size`` examples uniformly with replacement from a seeded generator.
    The history logs ``sft/loss``, ``sft/learning_rate``, ``sft/grad_norm`` (before clipping),
    ``global_step`` (examples seen) and ``time/elapsed`` per step.
    """
    if not examples:
        raise ValueError("examples must not be empty: give (prompt, response) pairs")
    tokenizer = tokenizer or CharTokenizer()
    if config.model.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"config.model.vocab_size ({config.model.vocab_size}) must equal "
                         f"tokenizer.vocab_size ({tokenizer.vocab_size})")
    set_seed(seed)
    model = model or GPT(config.model)
    model.train()
    gen = generator(seed)
    data = sft_batch(tokenizer, examples)  # encode once; batches are row subsets
    opt = adamw([model], config.learning_rate, config.weight_decay, config.adam_eps)  # decays the weight matrices only
    history, start = History(config=config), time.perf_counter()
    for step in tqdm(range(config.iterations), desc="SFT", disable=not progress):
        lr = warmup_cosine_learning_rate(config, step)
        set_learning_rate(opt, lr)
        idx = torch.randint(len(examples), (config.batch_size,), generator=gen)  # (B,)
        tokens, attn, lmask = (x[idx] for x in data)
        width = int(attn.sum(1).max())  # drop all-padding columns
        loss = sft_loss(model, tokens[:, :width], attn[:, :width], lmask[:, :width])
        check_finite(step, sft_loss=loss)
        grad_norm = optimizer_step(list(model.parameters()), opt, loss, config.max_grad_norm)
        history.log_update({"global_step": (step + 1) * config.batch_size,
                            "time/elapsed": time.perf_counter() - start,
                            "sft/loss": loss.item(), "sft/learning_rate": lr,
                            "sft/grad_norm": float(grad_norm)})
    model.eval()
    return model, history


def cache_dir() -> str:
    """Where :func:`pretrained_sft` keeps models: ``$MINIPPO_CACHE`` or ``<tempdir>/minippo-cache``."""
    return os.environ.get("MINIPPO_CACHE", os.path.join(tempfile.gettempdir(), "minippo-cache"))


def pretrained_sft(examples: list[tuple[str, str]], config: SFTConfig = SFTConfig(),
                   tokenizer: CharTokenizer | None = None, *, seed: int = 0, cache: bool = True,
                   progress: bool = True) -> tuple[GPT, History]:
    """:func:`train_sft`, or the cached result of the same call.

    The cache key hashes the examples, the config, the seed (after ``MINIPPO_SEED_OFFSET``),
    the torch version and what decides its float rounding (the CPU kernels torch dispatches to,
    ``MKL_CBWR``, the thread count), so a cached model is exactly the model this call would
    train here: a model cached under other numerics is never mistaken for this run's.  Returns ``(model, history)``; the cache
    keeps the training history with the weights, so a cached call returns the same curves
    (``history.config`` is ``config``).  ``cache=False`` always trains.
    """
    tokenizer = tokenizer or CharTokenizer()
    numerics = (torch.__version__, torch.backends.cpu.get_cpu_capability(), os.environ.get("MKL_CBWR"),
                torch.get_num_threads())
    fingerprint = repr(("sft-cache-v5", examples, config, shifted_seed(seed), tokenizer.chars, numerics))
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), f"sft-{key}.pt")
    if cache and os.path.exists(path):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = GPT(config.model)
        model.load_state_dict(saved["model"])
        return model.eval(), History(updates=saved["updates"], episodes=saved["episodes"], config=config)
    model, history = train_sft(examples, config, tokenizer, seed=seed, progress=progress)
    if cache:
        os.makedirs(cache_dir(), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        torch.save({"model": model.state_dict(), "updates": history.updates, "episodes": history.episodes}, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return model, history
