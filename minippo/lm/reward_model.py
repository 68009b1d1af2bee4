"""A Bradley-Terry reward model learned from preference pairs (chapter 7).

Real RLHF has no unit tests: people compare two answers and say which is better, and a reward
model learns a score that explains their choices.  The Bradley-Terry model (1952) says the
probability that answer ``y_w`` is preferred to ``y_l`` is a logistic function of the score
difference, so the reward model maximises the likelihood of the observed preferences:

.. math:: P(y_w \\succ y_l \\mid x) = \\sigma\\big(r_\\psi(x, y_w) - r_\\psi(x, y_l)\\big), \\qquad
          \\mathcal L(\\psi) = -\\mathbb E\\big[\\log\\sigma\\big(r_\\psi(x, y_w) - r_\\psi(x, y_l)\\big)\\big]

(InstructGPT, Ouyang et al. 2022, eq. 1; Stiennon et al. 2020, eq. 1).  Here the "labeller" is
the true code reward: pairs of SFT samples for one prompt, the better-scoring one preferred, so
the learned reward can be compared with the truth it was trained to imitate (chapter 7's
over-optimisation curves).

The model is the SFT transformer with a scalar head (the GPT's value head, zero-initialised so
every pair starts at probability 1/2 and loss log 2) read at the EOS token, the point where the
model has seen the whole answer.  After training, scores are normalised to mean 0 and standard
deviation 1 on the training responses (samples of the SFT policy), as Ziegler et al. (2019) and
Stiennon et al. (2020) do, so a KL coefficient means the same thing for every reward model.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm  # text bar: tqdm.auto needs ipywidgets and warns without it

from minippo.history import History
from minippo.lm.model import GPT, sample_responses
from minippo.lm.tokenizer import CharTokenizer
from minippo.optim import (adamw, check_optimizer_fields, optimizer_step, set_learning_rate,
                           warmup_cosine_learning_rate)
from minippo.utils import check_finite, check_range, check_types, generator, rng, set_seed

__all__ = [
    "RewardModelConfig",
    "PreferencePair",
    "make_preference_pairs",
    "sample_preference_pairs",
    "split_pairs",
    "bradley_terry_loss",
    "RewardModel",
    "encode_responses",
    "pair_accuracy",
    "train_reward_model",
    "RewardModelReward",
]


@dataclass(frozen=True)
class RewardModelConfig:
    """Training of the Bradley-Terry reward model (initialised from the SFT model, as in InstructGPT)."""

    iterations: int = 150  #: optimizer steps
    batch_size: int = 32  #: preference pairs per step
    learning_rate: float = 1e-3  #: peak LR
    warmup_iterations: int = 10  #: linear warm-up, then cosine decay
    min_learning_rate: float = 1e-4  #: cosine floor
    weight_decay: float = 0.0  #: AdamW weight decay of the weight matrices
    max_grad_norm: float = 1.0  #: global gradient-norm clip
    adam_eps: float = 1e-8  #: AdamW's epsilon (torch's default, as SFT)

    def __post_init__(self):
        check_types(self)
        check_optimizer_fields(self)
        check_range("batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: for ``prompt``, ``chosen`` was preferred to ``rejected``."""

    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0  #: true score of chosen minus that of rejected (0 if unknown)


# --------------------------------------------------------------------------- data
def make_preference_pairs(prompts: Sequence[str], responses: Sequence[str], scores: Sequence[float], *,
                          min_margin: float = 0.1, max_pairs_per_prompt: int | None = 6,
                          seed: int = 0) -> list[PreferencePair]:
    """Pairs of *different* responses to the same prompt whose true scores differ by at least
    ``min_margin``; the higher-scoring one is ``chosen``.  At most ``max_pairs_per_prompt`` pairs
    per prompt (drawn at random), so prompts with many samples do not dominate."""
    check_range("min_margin", min_margin, 0.0)
    groups: dict[str, dict[str, float]] = {}
    for p, r, s in zip(prompts, responses, scores):
        groups.setdefault(p, {})[r] = float(s)  # identical responses have identical scores
    shuffler, pairs = rng(seed), []
    for p, scored in groups.items():
        items = sorted(scored.items())
        cand = [(a, b) for i, a in enumerate(items) for b in items[i + 1:] if abs(a[1] - b[1]) >= min_margin]
        shuffler.shuffle(cand)
        for (ra, sa), (rb, sb) in cand[:max_pairs_per_prompt]:
            (cw, sw), (cl, sl) = ((ra, sa), (rb, sb)) if sa > sb else ((rb, sb), (ra, sa))
            pairs.append(PreferencePair(p, cw, cl, sw - sl))
    return pairs


@torch.no_grad()
def sample_preference_pairs(policy: GPT, prompts: Sequence[str], reward_fn,
                            tokenizer: CharTokenizer | None = None, *,
                            samples_per_prompt: int = 8, max_new_tokens: int = 24, temperature: float = 1.0,
                            seed: int = 0, **pair_kwargs) -> list[PreferencePair]:
    """Sample ``samples_per_prompt`` finished responses per prompt from ``policy``, score them with
    the true ``reward_fn`` (the labeller) and pair them with :func:`make_preference_pairs`."""
    tokenizer = tokenizer or CharTokenizer()
    all_prompts = [p for p in prompts for _ in range(samples_per_prompt)]
    gen, texts = sample_responses(policy, all_prompts, tokenizer, max_new_tokens, temperature,
                                  generator(seed))
    scores, _ = reward_fn(all_prompts, texts, gen.finished)
    keep = gen.finished.tolist()  # a truncated answer is not compared; the EOS penalty handles it
    rows = [(p, t, float(s)) for p, t, s, k in zip(all_prompts, texts, scores, keep) if k]
    return make_preference_pairs([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                 seed=seed, **pair_kwargs)


def split_pairs(pairs: list[PreferencePair], heldout_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """``(train, heldout)`` split *by prompt*, so held-out accuracy is measured on unseen prompts."""
    check_range("heldout_fraction", heldout_fraction, 0.0, 1.0, high_open=True)
    prompts = sorted({p.prompt for p in pairs})
    rng(seed).shuffle(prompts)
    held = set(prompts[: round(heldout_fraction * len(prompts))])
    return [p for p in pairs if p.prompt not in held], [p for p in pairs if p.prompt in held]


# --------------------------------------------------------------------------- the model
def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the preferences under Bradley-Terry:
    :math:`-\\mathbb E[\\log\\sigma(r_w - r_l)]`; ``log 2`` when the scores are equal.

    Source: Bradley & Terry (1952); InstructGPT (Ouyang et al. 2022), eq. 1; Stiennon et al.
    (2020), eq. 1.  Chapter 7, reward models and over-optimisation.
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"shapes must match: r_chosen {tuple(r_chosen.shape)}, "
                         f"r_rejected {tuple(r_rejected.shape)}")
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def encode_responses(tokenizer: CharTokenizer, prompts: Sequence[str], responses: Sequence[str],
                     finished: Sequence[bool] | None = None):
    """Right-padded ``BOS + prompt + response (+ EOS if finished)`` rows and the index of each
    row's last real token (its EOS): ``(tokens (B, L), attention_mask (B, L), last (B,))``."""
    finished = [True] * len(prompts) if finished is None else [bool(f) for f in finished]
    rows = [tokenizer.encode(p, bos=True) + tokenizer.encode(r, eos=f)
            for p, r, f in zip(prompts, responses, finished)]
    tokens, mask = tokenizer.pad_right(rows)  # (B, L)
    return tokens, mask, mask.long().sum(dim=1) - 1


class RewardModel(nn.Module):
    """A GPT whose value head, read at the last real token (EOS), is the reward.

    ``forward(tokens, attention_mask, last) -> (B,)`` returns ``(raw - mean) / std`` with
    ``mean``/``std`` set by :meth:`normalise` (0 and 1 until then).
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("std", torch.tensor(1.0))

    def raw(self, tokens: torch.Tensor, attention_mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Unnormalised scores ``(B,)``: the scalar head at index ``last`` of each row."""
        _, v = self.gpt.forward_with_value(tokens, attention_mask)  # (B, L)
        return v.gather(1, last[:, None]).squeeze(1)  # (B,)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return (self.raw(tokens, attention_mask, last) - self.mean) / self.std  # (B,)

    @torch.no_grad()
    def normalise(self, tokens: torch.Tensor, attention_mask: torch.Tensor, last: torch.Tensor) -> None:
        """Set ``mean``/``std`` so that these rows score mean 0 and standard deviation 1."""
        r = self.raw(tokens, attention_mask, last)
        self.mean.fill_(float(r.mean()))
        self.std.fill_(float(r.std().clamp(min=1e-6)))

    @torch.no_grad()
    def score(self, tokenizer: CharTokenizer, prompts: Sequence[str], responses: Sequence[str],
              finished: Sequence[bool] | None = None) -> torch.Tensor:
        """Normalised scores ``(B,)`` of text responses."""
        return self(*encode_responses(tokenizer, prompts, responses, finished))


def _pair_batch(tokenizer: CharTokenizer, pairs: Sequence[PreferencePair]):
    """Chosen rows first, then rejected rows, in one padded batch."""
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    return encode_responses(tokenizer, prompts, responses)


@torch.no_grad()
def pair_accuracy(rm: RewardModel, pairs: Sequence[PreferencePair],
                  tokenizer: CharTokenizer | None = None) -> float:
    """Fraction of pairs in which the reward model scores ``chosen`` above ``rejected``."""
    if not pairs:
        return float("nan")
    r = rm.raw(*_pair_batch(tokenizer or CharTokenizer(), pairs))  # (2B,)
    n = len(pairs)
    return float((r[:n] > r[n:]).float().mean())


def train_reward_model(pairs: Sequence[PreferencePair], init: GPT, config: RewardModelConfig = RewardModelConfig(),
                       tokenizer: CharTokenizer | None = None, *, heldout: Sequence[PreferencePair] = (),
                       seed: int = 0, progress: bool = True) -> tuple[RewardModel, History]:
    """Fit a :class:`RewardModel` (a copy of ``init``, usually the SFT model) to ``pairs``.

    Logs per step ``rm/loss``, ``rm/accuracy`` (on the step's pairs), ``rm/learning_rate``,
    ``rm/grad_norm`` (before clipping); the
    last row adds ``rm/heldout_accuracy`` on ``heldout`` (NaN if empty).  Scores are normalised on
    the training responses at the end.  Returns ``(reward_model, history)``.
    """
    if not pairs:
        raise ValueError("pairs must not be empty")
    tokenizer = tokenizer or CharTokenizer()
    set_seed(seed)
    gpt = copy.deepcopy(init)
    nn.init.zeros_(gpt.value_head.weight)
    nn.init.zeros_(gpt.value_head.bias)
    rm = RewardModel(gpt).train()
    opt = adamw([rm], config.learning_rate, config.weight_decay, config.adam_eps)  # decays the weight matrices only
    gen = generator(seed)
    history, start = History(config=config), time.perf_counter()
    for step in tqdm(range(config.iterations), desc="reward model", disable=not progress):
        lr = warmup_cosine_learning_rate(config, step)
        set_learning_rate(opt, lr)
        idx = torch.randint(len(pairs), (config.batch_size,), generator=gen).tolist()
        r = rm.raw(*_pair_batch(tokenizer, [pairs[i] for i in idx]))  # (2M,)
        r_w, r_l = r[: len(idx)], r[len(idx):]  # (M,), (M,)
        loss = bradley_terry_loss(r_w, r_l)
        check_finite(step, reward_model_loss=loss)
        grad_norm = optimizer_step(list(rm.parameters()), opt, loss, config.max_grad_norm)
        history.log_update({"global_step": (step + 1) * config.batch_size,
                            "time/elapsed": time.perf_counter() - start, "rm/loss": loss.item(),
                            "rm/accuracy": float((r_w > r_l).float().mean()),
                            "rm/learning_rate": lr, "rm/grad_norm": float(grad_norm)})
    rm.eval()
    rm.normalise(*_pair_batch(tokenizer, pairs))
    column = history.updates.setdefault("rm/heldout_accuracy", [float("nan")] * len(history))
    column[-1] = pair_accuracy(rm, heldout, tokenizer)
    return rm, history


class RewardModelReward:
    """A ``reward_fn`` for :func:`minippo.lm.rlhf.train` that scores responses with a reward model.

    Unfinished responses lose ``missing_eos_penalty`` (as the code reward does).  With
    ``true_reward`` (another reward function, e.g. the code reward) its score is reported as the
    metric ``rm/true_score`` next to its own metrics: the proxy and the truth side by side, which
    is how chapter 7 draws over-optimisation.
    """

    def __init__(self, rm: RewardModel, tokenizer: CharTokenizer | None = None, *, true_reward=None,
                 missing_eos_penalty: float = 1.0):
        self.rm, self.tokenizer, self.true_reward = rm, tokenizer or CharTokenizer(), true_reward
        self.missing_eos_penalty = missing_eos_penalty

    def __call__(self, prompts: list, responses: list, finished: torch.Tensor) -> tuple[torch.Tensor, dict]:
        finished = torch.as_tensor(finished, dtype=torch.bool)
        scores = self.rm.score(self.tokenizer, prompts, responses, finished.tolist())  # (B,)
        scores = scores - self.missing_eos_penalty * (~finished).float()
        metrics = {"rm/score": float(scores.mean())}
        if self.true_reward is not None:
            true, true_metrics = self.true_reward(prompts, responses, finished)
            metrics.update(true_metrics)
            metrics["rm/true_score"] = float(torch.as_tensor(true, dtype=torch.float32).mean())
        return scores, metrics
