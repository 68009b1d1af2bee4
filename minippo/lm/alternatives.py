"""Beyond PPO: RLOO, GRPO (with Dr. GRPO's corrections) and DPO on the same task (chapter 9).

All three drop PPO's critic.  Two keep sampling and scoring, and replace the learned value with
the *other samples of the same prompt*: draw a group :math:`\\mathcal G` of ``group_size``
responses per prompt (:math:`|\\mathcal G|` in chapter 9) and compare each with its siblings.

* **RLOO** (Ahmadian et al. 2024, "Back to Basics", eq. 6; Kool et al. 2019): REINFORCE on whole
  responses, with each response's baseline the mean return of the other ``group_size - 1``; the KL
  penalty is part of the sequence reward, as in RLHF-PPO.
* **GRPO** (Shao et al. 2024, DeepSeekMath, eqs. 3-4): PPO's clipped surrogate on every token,
  with the advantage of every token of response ``i`` equal to its group-normalised score
  :math:`(r_i - \\operatorname{mean}_{j \\in \\mathcal G} r_j) / \\operatorname{std}_{j \\in \\mathcal G} r_j`,
  the loss averaged per response (:math:`1/|y_i|`) and then over responses, and a k3 KL to the
  reference *in the loss*.
* **Dr. GRPO** (Liu et al. 2025, "Understanding R1-Zero-Like Training", Section 3.1) removes two
  biases: dividing by the group's std up-weights prompts that are nearly always right or wrong,
  and dividing by ``|y_i|`` makes long wrong answers cheap and short right ones valuable.
  ``scale_rewards=False`` and ``length_normalise=False`` switch them off (the sum over tokens is
  then divided by a constant, ``group_size x max_new_tokens``), and Dr. GRPO uses no KL term.

The third needs no sampling at all:

* **DPO** (Rafailov et al. 2023, eq. 7) fits the policy directly to the preference pairs the
  reward model of chapter 7 was trained on: the KL-regularised RLHF objective has a closed-form
  optimum, which turns the Bradley-Terry likelihood into a loss on log-probability ratios,

  .. math:: \\mathcal L_\\text{DPO} = -\\mathbb E\\Big[\\log\\sigma\\Big(
            \\beta\\log\\frac{\\pi_\\theta(y_w|x)}{\\pi_\\text{ref}(y_w|x)}
            - \\beta\\log\\frac{\\pi_\\theta(y_l|x)}{\\pi_\\text{ref}(y_l|x)}\\Big)\\Big].

Every loss reuses ``minippo.objectives`` (``clipped_surrogate``, ``policy_gradient_loss``,
``kl_k1``/``kl_k3``, ``masked_mean``); nothing here re-derives PPO.  Chapter 9, beyond PPO.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm  # text bar: tqdm.auto needs ipywidgets and warns without it

from minippo.history import History, prefixed
from minippo.lm.model import GPT, logprob_mismatch, response_logprobs, sample_responses
from minippo.lm.reward_model import PreferencePair
from minippo.lm.rlhf import (RewardFn, draw_prompts, generation_stats, kl_to_reference,
                             start_fine_tuning)
from minippo.lm.tokenizer import CharTokenizer
from minippo.objectives import (
    DIAGNOSTIC_CLIP_EPS,
    clipped_surrogate,
    kl_k1,
    kl_k3,
    masked_mean,
    policy_gradient_loss,
    update_diagnostics,
)
from minippo.optim import (check_optimizer_fields, optimizer_step, set_learning_rate,
                           warmup_cosine_learning_rate)
from minippo.utils import check_finite, check_range, check_types

__all__ = [
    "GRPOConfig",
    "RLOOConfig",
    "DPOConfig",
    "group_advantages",
    "leave_one_out_advantages",
    "grpo_loss",
    "train_grpo",
    "train_rloo",
    "prompt_response_batch",
    "sequence_logprobs",
    "preference_logprobs",
    "dpo_loss",
    "train_dpo",
]


# --------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class GRPOConfig:
    """GRPO / Dr. GRPO on the tiny GPT (paper defaults noted; sizes scaled to one CPU thread)."""

    iterations: int = 40  #: sample + update rounds
    prompts_per_batch: int = 16  #: distinct prompts per round
    group_size: int = 4  #: G, responses per prompt (DeepSeekMath: 64)
    max_new_tokens: int = 24  #: response length before truncation
    temperature: float = 1.0  #: sampling temperature (log-probs at the same one)
    update_epochs: int = 2  #: passes over each batch (DeepSeekMath: 1)
    num_minibatches: int = 2  #: minibatches per pass (whole groups stay together only in the advantage)
    learning_rate: float = 3e-4  #: peak LR (as RLHF-PPO here)
    warmup_iterations: int = 2  #: linear warm-up, then cosine decay
    min_learning_rate: float = 3e-5  #: cosine floor
    clip_eps: float = 0.2  #: ratio clip (DeepSeekMath)
    kl_coef: float = 0.04  #: beta of the k3 KL term in the loss (DeepSeekMath 0.04; Dr. GRPO 0)
    scale_rewards: bool = True  #: divide by the group's std (GRPO); False = Dr. GRPO
    length_normalise: bool = True  #: average tokens per response (GRPO); False = Dr. GRPO
    max_grad_norm: float | None = 1.0  #: global gradient-norm clip; None = off
    adam_eps: float = 1e-5  #: Adam epsilon (as RLHF-PPO here)

    def __post_init__(self):
        _check_common(self)
        check_range("group_size", self.group_size, 2)
        check_range("update_epochs", self.update_epochs, 1)
        check_range("num_minibatches", self.num_minibatches, 1, self.batch_size)
        check_range("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True)

    @property
    def batch_size(self) -> int:
        """Responses per round: prompts x group size."""
        return self.prompts_per_batch * self.group_size


@dataclass(frozen=True)
class RLOOConfig:
    """RLOO (REINFORCE with leave-one-out baselines) on the tiny GPT."""

    iterations: int = 40  #: sample + update rounds
    prompts_per_batch: int = 16  #: distinct prompts per round
    group_size: int = 4  #: k, responses per prompt (Ahmadian et al.: k = 2..4)
    max_new_tokens: int = 24  #: response length before truncation
    temperature: float = 1.0  #: sampling temperature (log-probs at the same one)
    learning_rate: float = 3e-4  #: peak LR
    warmup_iterations: int = 2  #: linear warm-up, then cosine decay
    min_learning_rate: float = 3e-5  #: cosine floor
    kl_coef: float = 0.05  #: beta of the k1 KL penalty in the sequence reward (as RLHF-PPO here)
    max_grad_norm: float | None = 1.0  #: global gradient-norm clip; None = off
    adam_eps: float = 1e-5  #: Adam epsilon (as RLHF-PPO here)

    def __post_init__(self):
        _check_common(self)
        check_range("group_size", self.group_size, 2)

    @property
    def batch_size(self) -> int:
        """Responses per round: prompts x group size."""
        return self.prompts_per_batch * self.group_size


def _check_common(c) -> None:
    check_types(c)
    check_optimizer_fields(c)
    check_range("prompts_per_batch", c.prompts_per_batch, 1)
    check_range("max_new_tokens", c.max_new_tokens, 1)
    check_range("temperature", c.temperature, 0.0, low_open=True)
    check_range("kl_coef", c.kl_coef, 0.0)


@dataclass(frozen=True)
class DPOConfig:
    """DPO on preference pairs (Rafailov et al. 2023)."""

    iterations: int = 60  #: optimizer steps (about 7 passes over ~300 pairs; measured: 150 at 3e-4 collapses)
    batch_size: int = 32  #: preference pairs per step
    beta: float = 0.5  #: KL strength of the implicit reward (Rafailov et al. use 0.1-0.5)
    learning_rate: float = 1e-4  #: peak LR (lower than PPO's: DPO's loss keeps pushing rejected answers down)
    warmup_iterations: int = 5  #: linear warm-up, then cosine decay
    min_learning_rate: float = 1e-5  #: cosine floor
    max_grad_norm: float | None = 1.0  #: global gradient-norm clip; None = off
    adam_eps: float = 1e-5  #: Adam epsilon (as RLHF-PPO here)

    def __post_init__(self):
        check_types(self)
        check_optimizer_fields(self)
        check_range("batch_size", self.batch_size, 1)
        check_range("beta", self.beta, 0.0, low_open=True)


# --------------------------------------------------------------------------- advantages
def group_advantages(scores: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantage of each response.

    .. math:: \\hat A_i = \\frac{r_i - \\operatorname{mean}_{j \\in \\mathcal G} r_j}
              {\\operatorname{std}_{j \\in \\mathcal G} r_j + \\varepsilon}

    for the responses :math:`i \\in \\mathcal G` of one prompt, :math:`r_i` their ``scores`` (a group
    is ``group_size`` consecutive rows) and :math:`\\varepsilon` = ``eps``.  ``scale=False`` drops
    the division (Dr. GRPO).  Zero mean within every group by construction.
    Source: Shao et al. (2024), DeepSeekMath, Section 4.1.2 ("outcome supervision"); Liu et al.
    (2025), Dr. GRPO, eq. 3.  Chapter 9, beyond PPO.
    """
    s = _groups(scores, group_size)  # (Q, G)
    adv = s - s.mean(dim=1, keepdim=True)  # (Q, G)
    if scale:
        adv = adv / (s.std(dim=1, keepdim=True) + eps)  # (Q, G)
    return adv.reshape(-1)  # (B,)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO's advantage: each response's return minus the mean return of the *other* responses.

    .. math:: \\hat A_i = R_i - \\frac{1}{|\\mathcal G|-1}\\sum_{j \\ne i} R_j
              = \\frac{|\\mathcal G|}{|\\mathcal G|-1}\\big(R_i - \\bar R\\big)

    for the :math:`|\\mathcal G|` = ``group_size`` responses of one prompt.  An unbiased baseline (it
    does not depend on response ``i``).
    Source: Ahmadian et al. (2024), "Back to Basics: Revisiting REINFORCE Style Optimization for
    Learning from Human Feedback in LLMs", eq. 6; Kool et al. (2019).  Chapter 9, beyond PPO.
    """
    r = _groups(rewards, group_size)  # (Q, G)
    baseline = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)  # (Q, G)
    return (r - baseline).reshape(-1)  # (B,)


def _groups(x: torch.Tensor, group_size: int) -> torch.Tensor:
    if x.dim() != 1 or x.numel() % group_size or group_size < 2:
        raise ValueError(f"scores must have shape (n * group_size,) with group_size >= 2, "
                         f"got {tuple(x.shape)} and group_size={group_size}")
    return x.reshape(-1, group_size)


# --------------------------------------------------------------------------- sampling in groups
@torch.no_grad()
def _group_rollout(policy: GPT, reference: GPT, prompts, tokenizer: CharTokenizer,
                   reward_fn: RewardFn, config, generator: torch.Generator, iteration: int):
    """Draw ``prompts_per_batch`` prompts (:func:`minippo.lm.rlhf.draw_prompts`), sample
    ``group_size`` responses each, score them and compute log-probs under the sampling policy and
    the reference."""
    picked = draw_prompts(prompts, iteration, config.prompts_per_batch, generator)
    batch_prompts = [p for p in picked for _ in range(config.group_size)]  # groups are contiguous
    gen, texts = sample_responses(policy, batch_prompts, tokenizer, config.max_new_tokens, config.temperature,
                                  generator)
    score, metrics = reward_fn(batch_prompts, texts, gen.finished)
    score = torch.as_tensor(score, dtype=torch.float32)  # (B,)
    policy.eval()
    args = (gen.tokens, gen.attention_mask, gen.prompt_len, config.temperature)
    logp, _, _ = response_logprobs(policy, *args)  # (B, R)
    logp_ref, _, _ = response_logprobs(reference, *args)  # (B, R)
    m = gen.response_mask  # (B, R)
    kl = kl_k1(logp, logp_ref) * m  # (B, R)
    metrics = {
        "rlhf/score": float(score.mean()),
        **kl_to_reference(logp, logp_ref, m),
        "rlhf/logprob_mismatch": logprob_mismatch(gen.logp, logp, m),
        "rollout/episode_length": float(gen.lengths.float().mean()),
        **generation_stats(gen.response, m, gen.finished, texts),
        **metrics,
    }
    return gen, score, logp, logp_ref, kl, metrics


@torch.no_grad()
def _after_update(policy: GPT, gen, logp_old: torch.Tensor, clip_eps: float, temperature: float) -> dict:
    """:func:`minippo.objectives.update_diagnostics` of the updated ``policy`` on the batch it was
    updated on (no critic: KL, clip fraction, ratios, entropy), as RLHF-PPO and CartPole measure
    them; ``policy`` is left in eval mode."""
    policy.eval()
    logp, entropy, _ = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_len,
                                         temperature)  # (B, R)
    return update_diagnostics(logp_old, logp, entropy, None, None, clip_eps, mask=gen.response_mask)


# --------------------------------------------------------------------------- GRPO
def grpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor,
              adv: torch.Tensor, mask: torch.Tensor, config: GRPOConfig) -> torch.Tensor:
    """GRPO's loss for ``(B, R)`` token tensors and per-response advantages ``adv`` (B,).

    .. math:: \\mathcal L_\\text{GRPO} = -\\frac{1}{B}\\sum_i \\frac{1}{|y_i|}\\sum_t
              \\min\\big(\\rho_{i,t}\\hat A_i, \\operatorname{clip}(\\rho_{i,t}, 1 \\pm \\epsilon)\\hat A_i\\big)
              + \\beta\\, \\frac{1}{B}\\sum_i \\frac{1}{|y_i|}\\sum_t k_3(\\pi_\\theta \\| \\pi_\\text{ref})_{i,t}

    with :math:`|y_i|` the length of response ``i`` (GRPO); Dr. GRPO (``length_normalise=False``)
    divides by ``max_new_tokens`` instead.  The clipped term is
    ``minippo.objectives.clipped_surrogate``: its mean over the ``N`` masked tokens becomes the
    per-response weighting by scaling each token's advantage by ``N / (B |y_i|)`` (or
    ``N / (B max_new_tokens)``) > 0, which passes through the ``min`` and the clip unchanged.
    Source: Shao et al. (2024), eq. 3; Liu et al. (2025), eq. 3.  Chapter 9, beyond PPO; chapter 10
    compares it with TRL's ``loss_type`` options (``grpo`` and ``dr_grpo`` are these two).
    """
    lengths = mask.sum(dim=1).to(logp.dtype)  # (M,)
    # the normaliser: the response's length |y_i| (GRPO) or a constant (Dr. GRPO)
    z = (lengths if config.length_normalise
         else torch.full_like(lengths, float(config.max_new_tokens)))  # (M,)
    w = mask.sum().to(logp.dtype) / (len(z) * z)  # (M,)
    adv_tok = (adv * w)[:, None].expand_as(logp)  # (M, R)
    pg = clipped_surrogate(logp, logp_old, adv_tok, config.clip_eps, mask=mask)
    kl = kl_k3(logp, logp_ref)  # (M, R): samples from the policy, KL(policy || reference)
    return pg + config.kl_coef * masked_mean(kl * w[:, None], mask)


def train_grpo(policy: GPT, prompts, reward_fn: RewardFn, config: GRPOConfig = GRPOConfig(), *,
               tokenizer: CharTokenizer | None = None, reference: GPT | None = None, seed: int = 0,
               progress: bool = True) -> tuple[GPT, History]:
    """GRPO (or Dr. GRPO, by the config's switches): no critic, group-relative advantages.

    ``prompts`` as in :func:`minippo.lm.rlhf.train` (a pool, or a function of the iteration).
    The history has the layout of :func:`minippo.lm.rlhf.train` (``rlhf/...``, ``gen/...``,
    reward metrics, ``time/...``) with GRPO's own ``grpo/...`` update metrics: the loss and
    gradient norm averaged over the minibatch steps, and the KL(old || new), clip fraction, ratio
    and entropy of the updated policy measured after the update on the whole batch
    (:func:`minippo.objectives.update_diagnostics`, as RLHF-PPO and CartPole measure them).
    GRPO has no ``target_kl`` early stop: its ``kl_coef`` term and the clip bound the step.
    Adam (``adam_eps``) with warm-up + cosine learning rate, as every language-model trainer.
    """
    tokenizer, reference, gen_rng = start_fine_tuning(policy, reference, seed, tokenizer)
    params = list(policy.parameters())
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, eps=config.adam_eps)
    history, start, global_step = History(config=config), time.perf_counter(), 0
    mb = config.batch_size // config.num_minibatches
    for it in tqdm(range(config.iterations), desc="GRPO", disable=not progress):
        lr = warmup_cosine_learning_rate(config, it)
        set_learning_rate(optimizer, lr)
        gen, score, logp_old, logp_ref, _, metrics = _group_rollout(policy, reference, prompts, tokenizer, reward_fn,
                                                                    config, gen_rng, it)
        adv = group_advantages(score, config.group_size, scale=config.scale_rewards)  # (B,)
        policy.train()
        stats = []
        for _ in range(config.update_epochs):
            perm = torch.randperm(config.batch_size, generator=gen_rng)
            for s in range(0, mb * config.num_minibatches, mb):
                idx = perm[s: s + mb]
                m = gen.response_mask[idx]  # (M, R)
                logp, _, _ = response_logprobs(policy, gen.tokens[idx], gen.attention_mask[idx], gen.prompt_len,
                                               config.temperature)  # (M, R)
                loss = grpo_loss(logp, logp_old[idx], logp_ref[idx], adv[idx], m, config)
                check_finite(it, policy_loss=loss)
                grad_norm = optimizer_step(params, optimizer, loss, config.max_grad_norm)
                stats.append((loss.item(), float(grad_norm)))
        diagnostics = _after_update(policy, gen, logp_old, config.clip_eps, config.temperature)
        global_step += int(gen.response_mask.sum())
        elapsed = time.perf_counter() - start
        history.log_update({"global_step": global_step, "time/elapsed": elapsed, **metrics,
                            "rollout/episodic_return": float(score.mean()),
                            **prefixed("grpo", diagnostics),
                            "grpo/policy_loss": sum(s[0] for s in stats) / len(stats),
                            "grpo/grad_norm": sum(s[1] for s in stats) / len(stats),
                            "grpo/learning_rate": lr,
                            "grpo/mean_reward": float(score.mean()), "grpo/reward_std": float(score.std()),
                            "grpo/zero_std_groups": float((_groups(score, config.group_size).std(dim=1) == 0)
                                                          .float().mean()),
                            "time/steps_per_second": global_step / elapsed})
    return policy, history


# --------------------------------------------------------------------------- RLOO
def train_rloo(policy: GPT, prompts, reward_fn: RewardFn, config: RLOOConfig = RLOOConfig(), *,
               tokenizer: CharTokenizer | None = None, reference: GPT | None = None, seed: int = 0,
               progress: bool = True) -> tuple[GPT, History]:
    """RLOO: one REINFORCE step per batch on whole responses, leave-one-out baselines, no critic.

    The sequence return is :math:`R_i = r_i - \\beta \\sum_t k_1(t)`, with :math:`r_i` the
    response's score (the RLHF reward summed over the response); the loss is
    ``policy_gradient_loss(log pi(y_i|x), A_i)`` with the response's log-probability summed over
    its tokens.  History as :func:`train_grpo`'s, with ``rloo/...``
    update metrics; the KL(old || new), ratio and entropy after the step, and the share of tokens
    whose ratio left ``1 +- DIAGNOSTIC_CLIP_EPS`` (0.2): how often PPO would have clipped it.
    """
    tokenizer, reference, gen_rng = start_fine_tuning(policy, reference, seed, tokenizer)
    params = list(policy.parameters())
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, eps=config.adam_eps)
    history, start, global_step = History(config=config), time.perf_counter(), 0
    for it in tqdm(range(config.iterations), desc="RLOO", disable=not progress):
        lr = warmup_cosine_learning_rate(config, it)
        set_learning_rate(optimizer, lr)
        gen, score, logp_old, _, kl, metrics = _group_rollout(policy, reference, prompts, tokenizer, reward_fn,
                                                              config, gen_rng, it)
        ret = score - config.kl_coef * kl.sum(dim=1)  # (B,)
        adv = leave_one_out_advantages(ret, config.group_size)  # (B,)
        policy.train()
        m = gen.response_mask  # (B, R)
        logp, _, _ = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_len, config.temperature)
        seq_logp = (logp * m).sum(dim=1)  # (B,)
        loss = policy_gradient_loss(seq_logp, adv)
        check_finite(it, policy_loss=loss)
        grad_norm = optimizer_step(params, optimizer, loss, config.max_grad_norm)
        diagnostics = _after_update(policy, gen, logp_old, DIAGNOSTIC_CLIP_EPS, config.temperature)
        global_step += int(m.sum())
        elapsed = time.perf_counter() - start
        history.log_update({"global_step": global_step, "time/elapsed": elapsed, **metrics,
                            "rollout/episodic_return": float(ret.mean()), **prefixed("rloo", diagnostics),
                            "rloo/policy_loss": loss.item(),
                            "rloo/mean_reward": float(ret.mean()), "rloo/reward_std": float(ret.std()),
                            "rloo/mean_advantage": float(adv.mean()), "rloo/grad_norm": float(grad_norm),
                            "rloo/learning_rate": lr, "rlhf/kl_coef": config.kl_coef,
                            "rlhf/non_score_reward": float((-config.kl_coef * kl.sum(dim=1)).mean()),
                            "time/steps_per_second": global_step / elapsed})
    return policy, history


# --------------------------------------------------------------------------- DPO
def prompt_response_batch(tokenizer: CharTokenizer, prompts: Sequence[str], responses: Sequence[str]):
    """The layout :func:`minippo.lm.model.generate` produces, for given texts: left-padded
    ``BOS + prompt``, then ``response + EOS`` right-padded.  Returns
    ``(tokens (B, P + R), attention_mask (B, P + R), P, response_mask (B, R))``."""
    ids, pmask = tokenizer.pad_left([tokenizer.encode(p, bos=True) for p in prompts])  # (B, P)
    rids, rmask = tokenizer.pad_right([tokenizer.encode(r, eos=True) for r in responses])  # (B, R)
    return torch.cat([ids, rids], dim=1), torch.cat([pmask, rmask], dim=1), ids.shape[1], rmask


def sequence_logprobs(model: GPT, tokens: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                      response_mask: torch.Tensor) -> torch.Tensor:
    """:math:`\\log\\pi(y|x) = \\sum_t \\log\\pi(y_t|x, y_{<t})` over the response tokens (EOS included),
    ``(B,)``."""
    logp, _, _ = response_logprobs(model, tokens, attention_mask, prompt_len)  # (B, R)
    return (logp * response_mask).sum(dim=1)  # (B,)


def dpo_loss(logp_chosen: torch.Tensor, logp_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's loss and the implicit rewards :math:`\\hat r = \\beta \\log(\\pi_\\theta/\\pi_\\text{ref})`.

    .. math:: \\mathcal L_\\text{DPO} = -\\mathbb E\\big[\\log\\sigma(\\hat r(x, y_w) - \\hat r(x, y_l))\\big]

    Equal to ``log 2`` when the policy is the reference.  Returns ``(loss, r_chosen (B,), r_rejected (B,))``.
    Source: Rafailov et al. (2023), "Direct Preference Optimization", eq. 7.  Chapter 9, beyond PPO.
    """
    r_w = beta * (logp_chosen - ref_chosen)  # (B,)
    r_l = beta * (logp_rejected - ref_rejected)  # (B,)
    return -F.logsigmoid(r_w - r_l).mean(), r_w.detach(), r_l.detach()


def preference_logprobs(model: GPT, tokenizer: CharTokenizer,
                        pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's sequence log-probabilities :math:`\\log\\pi(y_w|x)` and :math:`\\log\\pi(y_l|x)` of every
    pair, from one forward pass over chosen and rejected rows: ``(chosen (b,), rejected (b,))``."""
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    tokens, attn, P, rmask = prompt_response_batch(tokenizer, prompts, responses)
    lp = sequence_logprobs(model, tokens, attn, P, rmask)  # (2M,)
    return lp[: len(pairs)], lp[len(pairs):]


def train_dpo(policy: GPT, pairs: Sequence[PreferencePair], config: DPOConfig = DPOConfig(), *,
              tokenizer: CharTokenizer | None = None, reference: GPT | None = None, seed: int = 0,
              progress: bool = True) -> tuple[GPT, History]:
    """Fit ``policy`` (in place) to preference ``pairs`` with DPO; the reference defaults to a frozen copy.

    Logs per step ``dpo/loss``, ``dpo/accuracy`` (implicit reward ranks chosen first),
    ``dpo/chosen_reward``, ``dpo/rejected_reward``, ``dpo/margin``, ``dpo/learning_rate`` and
    ``dpo/grad_norm`` (before clipping).
    """
    if not pairs:
        raise ValueError("pairs must not be empty")
    tokenizer, reference, gen = start_fine_tuning(policy, reference, seed, tokenizer)
    params = list(policy.parameters())
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, eps=config.adam_eps)
    history, start = History(config=config), time.perf_counter()
    policy.train()
    for step in tqdm(range(config.iterations), desc="DPO", disable=not progress):
        lr = warmup_cosine_learning_rate(config, step)
        set_learning_rate(optimizer, lr)
        batch = [pairs[i] for i in torch.randint(len(pairs), (config.batch_size,), generator=gen).tolist()]
        lp_w, lp_l = preference_logprobs(policy, tokenizer, batch)
        with torch.no_grad():
            ref_w, ref_l = preference_logprobs(reference, tokenizer, batch)
        loss, r_w, r_l = dpo_loss(lp_w, lp_l, ref_w, ref_l, config.beta)
        check_finite(step, dpo_loss=loss)
        grad_norm = optimizer_step(params, optimizer, loss, config.max_grad_norm)
        history.log_update({"global_step": (step + 1) * config.batch_size,
                            "time/elapsed": time.perf_counter() - start, "dpo/loss": loss.item(),
                            "dpo/accuracy": float((r_w > r_l).float().mean()),
                            "dpo/chosen_reward": float(r_w.mean()), "dpo/rejected_reward": float(r_l.mean()),
                            "dpo/margin": float((r_w - r_l).mean()), "dpo/learning_rate": lr,
                            "dpo/grad_norm": float(grad_norm)})
    policy.eval()
    return policy, history
