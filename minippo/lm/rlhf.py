"""RLHF with PPO: fine-tune the tiny GPT against a reward, kept close to a frozen reference.

The language model is a policy in a token-level MDP (chapter 6): the state is the prompt plus
the response so far, an action is the next token, the episode ends at EOS or after ``R`` tokens.
The sequence-level *score* :math:`r(x, y)` (the code reward :math:`r_\\text{code}` of unit tests
passed, or a learned reward model's :math:`r_\\psi`) arrives only at the end.  Following Ziegler
et al. (2019) and InstructGPT (Ouyang et al. 2022, eq. 2), as TRL implements it, every token
also pays a KL penalty to the frozen SFT *reference* model:

.. math:: r_t = -\\beta\\,\\big(\\log\\pi_\\theta(y_t|s_t) - \\log\\pi_\\text{ref}(y_t|s_t)\\big)
          + \\mathbb 1[t = T]\\, r(x, y)

(:func:`kl_penalized_rewards`; the indicator adds the score at the EOS token, :math:`y_T`).
The return of the whole response is then ``r(x, y) - beta * k1-KL(policy || reference)``.  From there on
it is the PPO of chapters 4-5, reused, not rewritten (each equation exists once in the
package: the language-model trainer calls the functions the CartPole chapters derive): GAE with
``gamma = 1``
(``minippo.advantages.gae`` with ``time_dim=1`` and the response mask), advantage (and,
optionally, reward) whitening (``minippo.advantages.whiten``), the clipped surrogate and clipped value loss
(``minippo.objectives``), the early stop of chapter 5 (epochs end before a minibatch step
whose KL between old and new policy passes 1.5 ``target_kl``), Ziegler's adaptive KL controller (``minippo.schedules.AdaptiveKLController``) and
a warm-up + cosine learning rate (``minippo.schedules.warmup_cosine``).

Two measured choices differ from TRL's defaults.  ``gae_lambda = 1``: the value head starts at
zero, and with ``V = 0`` and ``lambda < 1`` a token ``l`` steps before EOS is credited with only
``lambda^l`` of the score, so after advantage whitening the *early* tokens of every response
(``"    return "``) look bad and short responses look good; the first updates then wreck the
policy.  With ``lambda = 1`` every token of a response gets its return minus the baseline.
``separate_critic = True``: with a shared trunk, the value loss moves the features the policy
reads; on the code task the shared head gained fewer points of pass rate at about twice the KL
to the reference (``separate_critic=False`` shows it).  Reward whitening is available
(``whiten_rewards=True``, TRL's option) but off, as in TRL: it scales the sparse per-token
rewards by about 5, so the value targets grow to ~5 while the clipped value loss lets the critic
move only ``clip_value_eps`` per update; with the critic lagging, runs without a KL penalty
drifted to degenerate answers (measured on the code task).

Masks.  Only response tokens up to and including the first EOS are actions: they alone get a
reward, a value loss and a policy loss; the PAD tokens after EOS get nothing (tests check it).

Chapters: 6 (from CartPole to tokens), 7 (reward models and over-optimisation), 8 (capstone).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm import tqdm  # text bar: tqdm.auto needs ipywidgets and warns without it

from minippo.advantages import gae, whiten
from minippo.history import History, prefixed
from minippo.lm.model import GPT, logprob_mismatch, response_logprobs, sample_responses
from minippo.lm.tokenizer import CharTokenizer
from minippo.objectives import (
    TARGET_KL_FACTOR,
    clipped_surrogate,
    clipped_value_loss,
    entropy_bonus,
    kl_k1,
    kl_k3,
    masked_mean,
    update_diagnostics,
)
from minippo.optim import (check_optimizer_fields, optimizer_step, set_learning_rate,
                           warmup_cosine_learning_rate)
from minippo.schedules import AdaptiveKLController
from minippo.utils import check_finite, check_range, check_types, generator, set_seed

__all__ = [
    "RLHFConfig",
    "RewardFn",
    "kl_penalized_rewards",
    "kl_to_reference",
    "generation_stats",
    "start_fine_tuning",
    "RolloutBatch",
    "make_rollout",
    "ppo_loss",
    "update",
    "train",
    "evaluate",
]

#: ``reward_fn(prompts, responses, finished) -> (scores (B,), metrics)``: one score per response
#: (``finished[b]``: response ``b`` ended with EOS) and a dict of extra metrics such as ``code/...``.
RewardFn = Callable[[list, list, torch.Tensor], tuple]


@dataclass(frozen=True)
class RLHFConfig:
    """RLHF-PPO on a tiny GPT (defaults tuned for the code task on one CPU thread; sources noted)."""

    iterations: int = 40  #: rollout + update rounds
    batch_size: int = 64  #: responses per rollout (TRL's batch_size)
    max_new_tokens: int = 24  #: R, response length before truncation
    temperature: float = 1.0  #: sampling temperature; log-probs are computed at the same one
    update_epochs: int = 4  #: PPO epochs per rollout (TRL ppo_epochs=4)
    num_minibatches: int = 2  #: minibatches per epoch (rows = whole responses)
    learning_rate: float = 3e-4  #: peak LR; measured: 1e-3 makes the first updates jump ~5 nats from the reference
    warmup_iterations: int = 2  #: linear LR warm-up, then cosine decay to min_learning_rate
    min_learning_rate: float = 3e-5  #: cosine floor (peak / 10)
    clip_eps: float = 0.2  #: policy ratio clip (PPO paper; TRL cliprange)
    clip_value_eps: float = 0.2  #: value clip (TRL cliprange_value)
    vf_coef: float = 0.1  #: value-loss weight (TRL vf_coef)
    ent_coef: float = 0.0  #: entropy bonus; 0 is usual for LMs (the KL penalty keeps entropy)
    gamma: float = 1.0  #: discount; 1 for LMs (TRL): the episode is short and the score is at the end
    gae_lambda: float = 1.0  #: GAE lambda; TRL's 0.95 assumes a trained critic (see module docstring)
    kl_coef: float = 0.05  #: beta, initial per-token KL coefficient (InstructGPT 0.02, TRL 0.2)
    adaptive_kl: bool = False  #: adapt beta with Ziegler et al.'s controller
    adaptive_kl_target: float = 1.0  #: the controller's target KL to the reference, nats per response (Ziegler: 6-10 with GPT-2)
    adaptive_kl_horizon: int = 2000  #: the controller's horizon in responses (Ziegler/TRL: 10000)
    #: stop the epochs before a minibatch step whose KL(old || new) per token exceeds 1.5 x this
    #: (CartPole PPO's rule); None = never (CleanRL: 0.015; measured here: at 0.1, runs without a
    #: KL penalty took steps that wrecked the policy)
    target_kl: float | None = 0.02
    whiten_rewards: bool = False  #: scale rewards to unit variance (TRL's whiten_rewards, also off there)
    norm_adv: bool = True  #: whiten advantages over the batch's response tokens
    max_grad_norm: float | None = 1.0  #: global gradient-norm clip; None = off
    separate_critic: bool = True  #: a separate value model (a copy of the SFT model), not the policy's head
    adam_eps: float = 1e-5  #: Adam epsilon (CleanRL and TRL: 1e-5)

    def __post_init__(self):
        check_types(self)
        check_optimizer_fields(self)
        check_range("batch_size", self.batch_size, 2)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("temperature", self.temperature, 0.0, low_open=True)
        check_range("update_epochs", self.update_epochs, 1)
        check_range("num_minibatches", self.num_minibatches, 1, self.batch_size)
        check_range("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True)
        check_range("clip_value_eps", self.clip_value_eps, 0.0, low_open=True)
        check_range("vf_coef", self.vf_coef, 0.0)
        check_range("ent_coef", self.ent_coef, 0.0)
        check_range("gamma", self.gamma, 0.0, 1.0)
        check_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_range("kl_coef", self.kl_coef, 0.0)
        check_range("adaptive_kl_target", self.adaptive_kl_target, 0.0, low_open=True)
        check_range("adaptive_kl_horizon", self.adaptive_kl_horizon, 0, low_open=True)
        if self.target_kl is not None:
            check_range("target_kl", self.target_kl, 0.0, low_open=True)

    @property
    def minibatch_size(self) -> int:
        """Responses per minibatch."""
        return self.batch_size // self.num_minibatches


# --------------------------------------------------------------------------- the reward
def kl_penalized_rewards(score: torch.Tensor, logp: torch.Tensor, logp_ref: torch.Tensor,
                         mask: torch.Tensor,
                         kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token RLHF rewards: the KL penalty on every token, the score on the last one.

    .. math:: r_t = -\\beta\\, k_1(t) + \\mathbb 1[t = T_b]\\, \\mathrm{score}_b, \\qquad
              k_1(t) = \\log\\pi_\\theta(y_t|s_t) - \\log\\pi_\\text{ref}(y_t|s_t)

    where :math:`T_b` is the index of response ``b``'s EOS (its last token if truncated).  Zero
    outside ``mask``.  Returns ``(rewards (B, R), kl (B, R))`` with ``kl`` the per-token k1
    estimate (``minippo.objectives.kl_k1``), also zero outside the mask.
    Source: Ziegler et al. (2019), eq. 2; InstructGPT (Ouyang et al. 2022), eq. 2; TRL's
    ``compute_rewards``.  Chapter 6, from CartPole to tokens.
    """
    if score.shape != logp.shape[:1]:
        raise ValueError(f"score must have shape ({logp.shape[0]},) to match logp "
                         f"{tuple(logp.shape)}, got {tuple(score.shape)}")
    m = mask.to(logp.dtype)  # (B, R)
    kl = kl_k1(logp, logp_ref) * m  # (B, R)
    rewards = -kl_coef * kl  # (B, R)
    last = (mask.long().sum(dim=1) - 1).clamp(min=0)  # (B,) index of EOS or of the last token
    rewards[torch.arange(len(score)), last] += score  # the score lands on the EOS token
    return rewards * m, kl


def kl_to_reference(logp: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor) -> dict:
    """How far the policy has moved from the reference, per response: ``rlhf/kl_to_ref``, the sum
    over a response's tokens of the k1 estimate ``log pi - log pi_ref`` (unbiased for the sequence
    KL; what the penalty charges), and ``rlhf/kl_to_ref_k3`` with k3 (never negative), both
    averaged over the batch.  ``(B, R)`` inputs, tokens drawn from the policy.  Every
    language-model RL trainer and :func:`evaluate` report these two."""
    m = mask.to(logp.dtype)  # (B, R)
    return {"rlhf/kl_to_ref": float((kl_k1(logp, logp_ref) * m).sum(dim=1).mean()),
            "rlhf/kl_to_ref_k3": float((kl_k3(logp, logp_ref) * m).sum(dim=1).mean())}


def generation_stats(response: torch.Tensor, mask: torch.Tensor, finished: torch.Tensor,
                     texts: Sequence[str]) -> dict:
    """Sequence-level statistics of a batch of responses (the source material's list, and the
    completion statistics TRL logs).

    ``gen/mean_length``, ``gen/min_length``, ``gen/max_length`` (tokens, EOS included),
    ``gen/distinct_responses`` (fraction of distinct texts in the batch; a collapsing policy
    drives it down), ``gen/repetition_rate`` (fraction of adjacent token pairs that repeat,
    averaged over responses) and ``gen/truncation_rate`` (fraction without EOS).  Chapter 6.
    """
    lengths = mask.sum(dim=1).to(torch.float32)  # (B,)
    same_as_prev = (response[:, 1:] == response[:, :-1]) & mask[:, 1:]  # (B, R-1)
    pairs = (lengths - 1).clamp(min=1)  # (B,)
    return {
        "gen/mean_length": float(lengths.mean()),
        "gen/min_length": float(lengths.min()),
        "gen/max_length": float(lengths.max()),
        "gen/distinct_responses": len(set(texts)) / max(len(texts), 1),
        "gen/repetition_rate": float((same_as_prev.sum(dim=1) / pairs).mean()),
        "gen/truncation_rate": float((~finished).float().mean()),
    }


# --------------------------------------------------------------------------- the rollout
@dataclass
class RolloutBatch:
    """Everything one PPO update needs, for B responses of width R (tensors ``(B, R)`` unless noted)."""

    tokens: torch.Tensor  #: (B, P + R) prompt and response
    attention_mask: torch.Tensor  #: (B, P + R)
    prompt_len: int  #: P
    mask: torch.Tensor  #: response tokens that are actions (up to and including EOS)
    logp: torch.Tensor  #: log pi_old(y_t | s_t), recomputed after sampling
    logp_ref: torch.Tensor  #: log pi_ref(y_t | s_t)
    values: torch.Tensor  #: V_old(s_t)
    rewards: torch.Tensor  #: per-token rewards (after whitening, if on)
    adv: torch.Tensor  #: advantages (after whitening, if on)
    ret: torch.Tensor  #: value targets, adv + values before advantage whitening
    score: torch.Tensor  #: (B,) sequence scores
    kl: torch.Tensor  #: per-token k1 KL to the reference


@torch.no_grad()
def make_rollout(policy: GPT, reference: GPT, prompts: Sequence[str], tokenizer: CharTokenizer,
                 reward_fn: RewardFn, config: RLHFConfig, kl_coef: float,
                 generator: torch.Generator | None = None,
                 critic: GPT | None = None) -> tuple[RolloutBatch, dict, list]:
    """Sample, score, penalise and compute advantages: one PPO batch and its metrics.

    The log-probs the update uses as ``logp_old`` are *recomputed* by a forward pass, as TRL
    does; the ones recorded while sampling must agree, and ``rlhf/logprob_mismatch`` (max
    absolute difference over response tokens) says whether they do.  Returns
    ``(batch, metrics, texts)``.
    """
    gen, texts = sample_responses(policy, prompts, tokenizer, config.max_new_tokens, config.temperature, generator)
    score, reward_metrics = reward_fn(list(prompts), texts, gen.finished)
    score = torch.as_tensor(score, dtype=torch.float32)  # (B,)
    mask, P = gen.response_mask, gen.prompt_len  # (B, R)
    policy.eval()
    logp, _, values = response_logprobs(policy, gen.tokens, gen.attention_mask, P, config.temperature,
                                        with_value=critic is None)  # (B, R)
    if critic is not None:
        _, _, values = response_logprobs(critic, gen.tokens, gen.attention_mask, P, config.temperature,
                                         with_value=True)
    logp_ref, _, _ = response_logprobs(reference, gen.tokens, gen.attention_mask, P, config.temperature)  # (B, R)
    rewards, kl = kl_penalized_rewards(score, logp, logp_ref, mask, kl_coef)  # (B, R)
    non_score = -kl_coef * kl.sum(dim=1)  # (B,)
    if config.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)  # (B, R)
    values = values * mask  # (B, R)
    adv = gae(rewards, values, None, None, None, config.gamma, config.gae_lambda, mask=mask, time_dim=1)  # (B, R)
    ret = adv + values  # (B, R)
    if config.norm_adv:
        adv = whiten(adv, mask)  # (B, R)
    ret_total = score + non_score  # (B,) the response's return before whitening
    metrics = {
        "rollout/episodic_return": float(ret_total.mean()),
        "rollout/episode_length": float(gen.lengths.float().mean()),
        "ppo/mean_reward": float(ret_total.mean()),
        "ppo/reward_std": float(ret_total.std()),
        "rlhf/score": float(score.mean()),
        "rlhf/non_score_reward": float(non_score.mean()),
        **kl_to_reference(logp, logp_ref, mask),
        "rlhf/logprob_mismatch": logprob_mismatch(gen.logp, logp, mask),
        **generation_stats(gen.response, mask, gen.finished, texts),
        **reward_metrics,
    }
    batch = RolloutBatch(gen.tokens, gen.attention_mask, P, mask, logp, logp_ref, values, rewards, adv, ret,
                         score, kl)
    return batch, metrics, texts


# --------------------------------------------------------------------------- the update
def ppo_loss(policy: GPT, batch: RolloutBatch, idx: torch.Tensor, config: RLHFConfig,
             critic: GPT | None = None) -> tuple[torch.Tensor, dict]:
    """PPO's loss on the rows ``idx`` of ``batch``: clipped surrogate + ``vf_coef`` x clipped value loss
    - ``ent_coef`` x entropy, each a mean over response tokens inside the mask (TRL's ``masked_mean``).

    Returns ``(loss, stats)``: ``stats`` holds the detached ``pg`` and ``vf`` losses and ``kl``,
    the minibatch's per-token k3 KL(old || new) before the step (what ``target_kl`` checks).
    """
    tokens, attn, m = batch.tokens[idx], batch.attention_mask[idx], batch.mask[idx]  # (M, L), (M, L), (M, R)
    logp, entropy, v = response_logprobs(policy, tokens, attn, batch.prompt_len, config.temperature,
                                         with_value=critic is None)  # (M, R)
    if critic is not None:
        _, _, v = response_logprobs(critic, tokens, attn, batch.prompt_len, config.temperature, with_value=True)
    logp_old, adv, ret, v_old = batch.logp[idx], batch.adv[idx], batch.ret[idx], batch.values[idx]  # (M, R)
    pg_loss = clipped_surrogate(logp, logp_old, adv, config.clip_eps, mask=m)
    v_loss = clipped_value_loss(v, v_old, ret, config.clip_value_eps, mask=m)
    ent = entropy_bonus(entropy, mask=m)
    loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * ent
    with torch.no_grad():
        stats = {"pg": pg_loss.detach(), "vf": v_loss.detach(),
                 "kl": masked_mean(kl_k3(logp_old, logp), m)}  # KL(old || new), per token
    return loss, stats


def update(policy: GPT, optimizer: torch.optim.Optimizer, batch: RolloutBatch, config: RLHFConfig,
           *, generator: torch.Generator | None = None, critic: GPT | None = None, iteration: int = 0) -> dict:
    """``update_epochs`` passes of minibatch PPO over ``batch``.

    With ``target_kl`` set, the epochs stop before a minibatch step whose per-token k3 estimate
    of KL(old || new) on that minibatch, measured before the step, exceeds
    ``TARGET_KL_FACTOR * target_kl`` = 1.5 target_kl: the rule of CartPole's
    :func:`minippo.ppo.update` (Spinning Up's).  Returns the ``ppo/...`` metrics: what the
    update changed, measured after it on the whole batch
    (:func:`minippo.objectives.update_diagnostics`, as CartPole's PPO measures it), the means
    over the steps taken of the losses and of the gradient norm before clipping,
    ``ppo/num_gradient_steps``, ``ppo/epochs`` (started) and ``ppo/early_stopped``.
    """
    policy.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    B = batch.tokens.shape[0]
    sums = {"policy_loss": 0.0, "value_loss": 0.0, "grad_norm": 0.0}
    steps, epochs, stop = 0, 0, False
    for _ in range(config.update_epochs):
        epochs += 1
        perm = torch.randperm(B, generator=generator)
        for start in range(0, config.minibatch_size * config.num_minibatches, config.minibatch_size):
            idx = perm[start: start + config.minibatch_size]
            loss, stats = ppo_loss(policy, batch, idx, config, critic)
            if config.target_kl is not None:
                if float(stats["kl"]) > TARGET_KL_FACTOR * config.target_kl:  # checked before the step
                    stop = True
                    break
            check_finite(iteration, policy_loss=stats["pg"], value_loss=stats["vf"])
            grad_norm = optimizer_step(params, optimizer, loss, config.max_grad_norm)
            sums["policy_loss"] += float(stats["pg"])
            sums["value_loss"] += float(stats["vf"])
            sums["grad_norm"] += float(grad_norm)
            steps += 1
        if stop:
            break
    policy.eval()
    with torch.no_grad():  # the updated policy on the whole batch
        logp, entropy, _ = response_logprobs(policy, batch.tokens, batch.attention_mask, batch.prompt_len,
                                             config.temperature)  # (B, R)
    metrics = prefixed("ppo", update_diagnostics(batch.logp, logp, entropy, batch.values, batch.ret,
                                                 config.clip_eps, mask=batch.mask))
    metrics.update({f"ppo/{name}": total / steps if steps else math.nan for name, total in sums.items()})
    metrics.update({
        "ppo/mean_advantage": float(masked_mean(batch.adv, batch.mask)),
        "ppo/num_gradient_steps": float(steps), "ppo/epochs": epochs,
        "ppo/early_stopped": float(stop),
    })
    return metrics


# --------------------------------------------------------------------------- the loop
def start_fine_tuning(policy: GPT, reference: GPT | None, seed: int,
                      tokenizer: CharTokenizer | None) -> tuple[CharTokenizer, GPT, torch.Generator]:
    """What every language-model RL trainer does first: seed, freeze a copy of the reference
    (default: of the policy as given, the SFT model), and make the sampling generator.  Returns
    ``(tokenizer, frozen reference, generator)``."""
    set_seed(seed)
    # a frozen copy: freezing the caller's model in place would stop it training later
    reference = copy.deepcopy(reference if reference is not None else policy)
    reference.eval().requires_grad_(False)
    return tokenizer or CharTokenizer(), reference, generator(seed)


def draw_prompts(prompts: Sequence[str] | Callable[[int], Sequence[str]], iteration: int,
                 count: int, gen: torch.Generator) -> list[str]:
    """``count`` prompts drawn uniformly, with replacement, from the pool of ``iteration``:
    ``prompts`` itself, or ``prompts(iteration)`` when it is a function (a curriculum)."""
    pool = list(prompts(iteration) if callable(prompts) else prompts)
    if not pool:
        raise ValueError(f"prompts must not be empty (iteration {iteration})")
    return [pool[i] for i in torch.randint(len(pool), (count,), generator=gen).tolist()]


def train(policy: GPT, prompts: Sequence[str] | Callable[[int], Sequence[str]], reward_fn: RewardFn,
          config: RLHFConfig = RLHFConfig(), *, tokenizer: CharTokenizer | None = None,
          reference: GPT | None = None, seed: int = 0, progress: bool = True) -> tuple[GPT, History]:
    """RLHF-PPO: ``iterations`` rounds of (sample ``batch_size`` prompts, generate, score, update).

    ``prompts`` is the pool every iteration samples from, or a function of the iteration
    (0-based) that returns the pool: a curriculum, e.g. ``lambda it: easy if it < 10 else all``.
    ``policy`` is fine-tuned in place and returned; ``reference`` defaults to a frozen copy of
    the policy as given (the SFT model).  One history row per iteration: the ``ppo/...``,
    ``rlhf/...``, ``gen/...`` metrics, the reward function's own (``code/...``),
    ``global_step`` (response tokens sampled so far: one token is one step of the token MDP),
    ``time/elapsed`` and ``time/steps_per_second``.  Each response is also logged as an episode.
    """
    tokenizer, reference, gen = start_fine_tuning(policy, reference, seed, tokenizer)
    if not callable(prompts):
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts must not be empty")
    critic = copy.deepcopy(policy) if config.separate_critic else None
    modules = [policy] + ([critic] if critic is not None else [])
    params = [p for mod in modules for p in mod.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, eps=config.adam_eps)
    kl_ctl = AdaptiveKLController(config.kl_coef,
                                  config.adaptive_kl_target if config.adaptive_kl else None,
                                  config.adaptive_kl_horizon)
    history, start, global_step = History(config=config), time.perf_counter(), 0
    for it in tqdm(range(config.iterations), desc="RLHF-PPO", disable=not progress):
        lr = warmup_cosine_learning_rate(config, it)
        set_learning_rate(optimizer, lr)
        batch_prompts = draw_prompts(prompts, it, config.batch_size, gen)
        kl_coef = kl_ctl.value
        batch, metrics, _ = make_rollout(policy, reference, batch_prompts, tokenizer, reward_fn, config,
                                         kl_coef, gen, critic)
        metrics.update(update(policy, optimizer, batch, config, generator=gen, critic=critic, iteration=it))
        kl_ctl.update(metrics["rlhf/kl_to_ref"], config.batch_size)
        global_step += int(batch.mask.sum())
        elapsed = time.perf_counter() - start
        history.log_update({"global_step": global_step, "time/elapsed": elapsed, **metrics,
                            "rlhf/kl_coef": kl_coef, "ppo/learning_rate": lr,
                            "time/steps_per_second": global_step / elapsed})
        ret = (batch.score - kl_coef * batch.kl.sum(dim=1)).tolist()
        history.log_episodes(global_step, elapsed, ret, batch.mask.sum(dim=1).tolist())
    return policy, history


@torch.no_grad()
def evaluate(policy: GPT, prompts: Sequence[str], reward_fn: RewardFn, *, tokenizer: CharTokenizer | None = None,
             reference: GPT | None = None, samples_per_prompt: int = 4, max_new_tokens: int = 24,
             temperature: float = 1.0, seed: int = 0) -> dict:
    """Score ``samples_per_prompt`` samples of every prompt (``temperature=0``: one greedy sample).

    Returns the reward function's metrics plus ``rlhf/score``, the ``gen/...`` statistics and,
    given a ``reference``, ``rlhf/kl_to_ref`` (k1, summed over a response's tokens, averaged over
    responses; an unbiased estimate of the sequence KL) and ``rlhf/kl_to_ref_k3``.
    """
    tokenizer = tokenizer or CharTokenizer()
    n = 1 if temperature == 0 else samples_per_prompt
    all_prompts = [p for p in prompts for _ in range(n)]
    gen, texts = sample_responses(policy, all_prompts, tokenizer, max_new_tokens, temperature,
                                  generator(seed))
    score, metrics = reward_fn(all_prompts, texts, gen.finished)
    metrics = {"rlhf/score": float(torch.as_tensor(score, dtype=torch.float32).mean()), **metrics,
               **generation_stats(gen.response, gen.response_mask, gen.finished, texts)}
    if reference is not None:
        t = temperature if temperature > 0 else 1.0
        logp, _, _ = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_len, t)
        logp_ref, _, _ = response_logprobs(reference, gen.tokens, gen.attention_mask, gen.prompt_len, t)
        metrics.update(kl_to_reference(logp, logp_ref, gen.response_mask))
    return metrics
