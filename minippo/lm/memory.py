"""Two ways to fit a bigger batch in the same memory, done for real and measured (chapter 8).

**Gradient accumulation.**  Split a batch into micro-batches, call ``backward`` on each and step
once: gradients add up, so the result is the full-batch gradient *if* each micro-batch's loss is
weighted by its share of what the full loss averages over.  For a loss that is a mean over
tokens, that share is the micro-batch's number of tokens divided by the batch's, not
``1/n_micro``: dividing every micro-loss by the number ``n_micro`` of micro-batches (the source
material's ``loss / accumulation_steps``) is exact only when every micro-batch has as many
tokens as every other.  :func:`accumulate_gradients` does it right, and ``token_weighted=False`` shows the error.

**Activation checkpointing.**  Backpropagation needs the activations of the forward pass; a
transformer stores several ``(B, L, D)`` and ``(B, n_head, L, L)`` tensors per block.
``torch.utils.checkpoint`` stores only each block's input and recomputes the rest during
``backward``: less memory, about one more forward pass of compute, and *the same gradient*
(``GPT.hidden(..., checkpoint=True)``; a test checks the gradients).  The source material's
"checkpointing" function runs the forward under ``no_grad``, which saves memory by computing no
gradient at all.

Measuring memory on a CPU.  :func:`saved_activation_bytes` counts what autograd keeps for
``backward`` (through ``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage);
:func:`peak_memory_bytes` replays the allocator's events recorded by ``torch.profiler`` and
returns the highest point reached above the starting level.  Chapter 8.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable

import torch

from minippo.utils import check_range

__all__ = ["accumulate_gradients", "saved_activation_bytes", "peak_memory_bytes", "checkpointing_report"]


def accumulate_gradients(loss_fn: Callable[[torch.Tensor], torch.Tensor], rows: int, micro_batch_size: int,
                         weights: torch.Tensor | None = None, token_weighted: bool = True) -> float:
    """Backpropagate a batch of ``rows`` in micro-batches of ``micro_batch_size``; returns the loss.

    ``loss_fn(idx)`` returns the *mean* loss over the units (tokens, or rows) of rows ``idx``;
    ``weights[r]`` is the number of units in row ``r`` (``None``: one per row).  Each micro-loss
    is scaled by its share of all units before ``backward``, so the accumulated ``.grad`` equals
    the gradient of the mean over the whole batch:

    .. math:: \\nabla \\frac{1}{N}\\sum_{u=1}^{N} \\ell_u
              = \\sum_j \\frac{N_j}{N}\\, \\nabla \\frac{1}{N_j}\\sum_{u \\in j} \\ell_u

    over the micro-batches :math:`j` of :math:`N_j` units each (chapter 8).
    ``token_weighted=False`` scales by ``1/n_micro`` instead, :math:`n_\\text{micro}` the number of
    micro-batches (the common shortcut; wrong when the
    micro-batches hold different numbers of units).  Call ``optimizer.zero_grad()`` before and
    ``optimizer.step()`` after.  Chapter 8.
    """
    check_range("rows", rows, 1)
    check_range("micro_batch_size", micro_batch_size, 1)
    weights = torch.ones(rows) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if weights.shape != (rows,):
        raise ValueError(f"weights must have shape ({rows},), got {tuple(weights.shape)}")
    total, k = float(weights.sum()), -(-rows // micro_batch_size)
    loss_value = 0.0
    for start in range(0, rows, micro_batch_size):
        idx = torch.arange(start, min(rows, start + micro_batch_size))
        share = float(weights[idx].sum()) / total if token_weighted else 1.0 / k
        loss = loss_fn(idx)
        (loss * share).backward()
        loss_value += share * loss.item()
    return loss_value


def saved_activation_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for ``backward`` while ``fn()`` runs (each storage once).

    Parameters saved by reference count too (they are a fixed cost); ``fn`` should only run the
    forward pass and return the loss.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def peak_memory_bytes(fn: Callable[[], object]) -> int:
    """Highest CPU memory allocated by torch while ``fn()`` runs, above the level at the start.

    Replays the allocation and free events that ``torch.profiler`` records with
    ``profile_memory=True`` in time order.  (``torch.cuda.max_memory_allocated`` does this on a
    GPU; the CPU allocator has no such counter.)  Falls back to :func:`saved_activation_bytes`
    if this torch build does not expose the events.  The profiler's own start and stop lines
    (written by its C++ side straight to file descriptor 2, so that a notebook would show them)
    are silenced; what ``fn`` writes to stderr is not.
    """
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_fd2():
        prof.start()
    try:
        fn()
    finally:
        with _quiet_fd2():
            prof.stop()
    try:
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
    except AttributeError:  # pragma: no cover - older/newer profiler internals
        return saved_activation_bytes(fn)
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak


@contextlib.contextmanager
def _quiet_fd2():
    """Send file descriptor 2 (C/C++ stderr, which Python's ``sys.stderr`` does not cover) to
    the null device for the duration of the block."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def checkpointing_report(model, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
    """Forward + backward of ``logsumexp`` of the logits with and without activation checkpointing.

    Returns ``{"saved_bytes", "saved_bytes_checkpointed", "peak_bytes", "peak_bytes_checkpointed",
    "seconds", "seconds_checkpointed", "max_grad_difference"}``: what autograd stores, the
    allocator's peak, the wall time of one forward + backward, and the largest absolute
    difference between the two gradients (0 up to float rounding).
    """
    out, grads = {}, []
    for ckpt, suffix in ((False, ""), (True, "_checkpointed")):
        loss_of = lambda: model(tokens, attention_mask, checkpoint=ckpt).logsumexp(-1).mean()  # noqa: E731
        out["saved_bytes" + suffix] = saved_activation_bytes(loss_of)
        model.zero_grad()
        out["peak_bytes" + suffix] = peak_memory_bytes(lambda: loss_of().backward())
        model.zero_grad()
        start = time.perf_counter()
        loss_of().backward()
        out["seconds" + suffix] = time.perf_counter() - start
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        model.zero_grad()
    out["max_grad_difference"] = max(float((a - b).abs().max()) for a, b in zip(*grads))
    return out
