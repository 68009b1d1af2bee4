"""Gradient accumulation equals the full-batch gradient; activation checkpointing saves memory, not accuracy."""
import pytest
import torch

from minippo.lm.codetask import make_task
from minippo.lm.memory import accumulate_gradients, checkpointing_report, peak_memory_bytes, saved_activation_bytes
from minippo.lm.model import GPT, GPTConfig
from minippo.lm.sft import sft_batch, sft_loss
from minippo.lm.tokenizer import CharTokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    task = make_task()
    return sft_batch(CharTokenizer(), task.corpus[:24])  # bodies of different lengths


def _grads(model):
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_gradient_accumulation_equals_full_batch(data):
    tokens, attn, loss_mask = data
    torch.manual_seed(0)
    model = GPT(GPTConfig())
    model.zero_grad()
    full = sft_loss(model, tokens, attn, loss_mask)
    full.backward()
    g_full = _grads(model)
    tokens_per_row = loss_mask[:, 1:].sum(dim=1)  # what the loss averages over
    for micro in (1, 5, 8, 24):
        model.zero_grad()
        loss = accumulate_gradients(lambda idx: sft_loss(model, tokens[idx], attn[idx], loss_mask[idx]),
                                    len(tokens), micro, weights=tokens_per_row)
        assert abs(loss - full.item()) < 1e-5
        for a, b in zip(_grads(model), g_full):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    # dividing every micro-loss by the number of micro-batches is not the same gradient
    model.zero_grad()
    accumulate_gradients(lambda idx: sft_loss(model, tokens[idx], attn[idx], loss_mask[idx]), len(tokens), 5,
                         weights=tokens_per_row, token_weighted=False)
    assert max(float((a - b).abs().max()) for a, b in zip(_grads(model), g_full)) > 1e-4


def test_activation_checkpointing_same_gradient_less_memory(data):
    tokens, attn, _ = data
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=3))
    report = checkpointing_report(model, tokens, attn)
    assert report["max_grad_difference"] < 1e-6
    assert report["saved_bytes_checkpointed"] < 0.5 * report["saved_bytes"]
    assert report["peak_bytes_checkpointed"] < report["peak_bytes"]


def test_memory_probes_see_a_known_tensor():
    x = torch.randn(1000, requires_grad=True)
    assert saved_activation_bytes(lambda: (x * x).sum()) == 4000  # x saved (once) for d(x*x)/dx
    assert peak_memory_bytes(lambda: torch.ones(250_000).sum()) >= 1_000_000


def test_peak_memory_writes_nothing_to_stderr():
    """The profiler's C++ start/stop lines go to file descriptor 2, which a notebook shows."""
    import pathlib
    import subprocess
    import sys

    code = ("import torch; from minippo.lm.memory import peak_memory_bytes; "
            "print(peak_memory_bytes(lambda: torch.ones(250_000).sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[1])
    assert int(out.stdout) >= 1_000_000
    assert out.stderr == "", out.stderr
