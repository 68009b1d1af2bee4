"""Optimizers and the optimizer step every trainer takes."""
import math

import pytest
import torch

from minippo.lm.model import GPT, GPTConfig
from minippo.optim import adamw, optimizer_step, warmup_cosine_learning_rate
from minippo.schedules import warmup_cosine

torch.set_num_threads(1)


def test_adamw_decays_only_the_weight_matrices():
    """With a zero gradient, AdamW's step is the decay alone: matrices (linear layers,
    embeddings) shrink by 1 - lr * wd; biases and LayerNorm parameters do not move."""
    model = GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = adamw([model], lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if p.dim() >= 2 else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)
    assert {"ln_f.bias", "blocks.0.ln_1.weight", "blocks.0.attn.c_attn.bias"} <= {
        name for name, p in model.named_parameters() if p.dim() < 2}
    # the tied embedding / LM head is one parameter, optimised once
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_optimizer_step_returns_the_norm_before_clipping():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    norm = optimizer_step([w], opt, (w * torch.tensor([3.0, 4.0])).sum(), max_grad_norm=1.0)
    assert float(norm) == pytest.approx(5.0)
    torch.testing.assert_close(w.detach(), -torch.tensor([0.6, 0.8]))  # clipped to norm 1
    norm = optimizer_step([w], opt, (w * torch.tensor([3.0, 4.0])).sum(), max_grad_norm=None)
    assert float(norm) == pytest.approx(5.0)
    torch.testing.assert_close(w.detach(), -torch.tensor([3.6, 4.8]))  # unclipped


def test_warmup_cosine_learning_rate_reads_the_config():
    class Config:
        iterations, learning_rate, warmup_iterations, min_learning_rate = 10, 1e-3, 2, 1e-4

    assert [warmup_cosine_learning_rate(Config, i) for i in range(11)] == [
        warmup_cosine(i, 10, 1e-3, 2, 1e-4) for i in range(11)]
    assert math.isclose(warmup_cosine_learning_rate(Config, 10), 1e-4)
