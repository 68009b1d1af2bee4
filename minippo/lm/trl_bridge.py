"""minippo's GRPO and RLOO, run by Hugging Face TRL on the same task, start, reward and budget (chapter 10).

Import it explicitly, ``from minippo.lm import trl_bridge``; it needs the ``trl`` extra
(``pip install "minippo[trl]"``: ``trl``, ``transformers``, ``accelerate``, ``datasets``).

* :func:`grpo_fields` / :func:`rloo_fields` translate a minippo config into TRL's, field by
  field, as ``(minippo field, TRL field, TRL value)`` rows; :func:`trl_args` builds the TRL
  config from those rows plus the settings that make a run local and CPU-only
  (:data:`LOCAL_RUN`).  One table is the documentation and the code.
* :class:`TRLReward` hands a minippo ``reward_fn(prompts, responses, finished)`` to TRL, which
  calls reward functions with ``prompts, completions, completion_ids``; it also logs the
  ``code/...`` metrics through TRL's ``log_metric``.
* :class:`GRPOTrainer` and :class:`RLOOTrainer` are TRL's trainers with one change: the forward
  passes that score tokens get ``position_ids`` derived from the attention mask
  (:func:`minippo.lm.hf.positions_from_mask`).  TRL 1.16 computes every log-probability (the
  policy's, the old policy's and the reference's) in ``_get_per_token_logps_and_entropies``,
  which calls ``model(input_ids=..., attention_mask=..., labels=..., fused_lm_head=True)`` and
  no ``position_ids``.  A model with absolute position embeddings (GPT-2, so the tiny GPT) then
  reads a left-padded prompt at shifted positions, while ``generate`` sampled it at the right
  ones; rotary models (Llama, Qwen) do not notice, because a shift of every position by the
  same amount leaves their attention scores unchanged.  ``fix_positions=False`` in
  :func:`train_trl` runs TRL's own trainers, to measure what the shift costs.
* :func:`train_trl` is the counterpart of :func:`minippo.lm.train_grpo` / ``train_rloo``: it
  converts the tiny GPT (:func:`minippo.lm.hf.to_hf`), trains it with TRL, converts it back
  and returns ``(model, history)`` with minippo's metric names (:data:`METRIC_NAMES`) next to
  TRL's own.  ``history.updates["time/train_cpu_seconds"]`` is the CPU time of ``trainer.train()``.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from typing import Sequence

import torch

from minippo.history import History
from minippo.lm import hf
from minippo.lm.alternatives import GRPOConfig, RLOOConfig
from minippo.lm.rlhf import RewardFn
from minippo.lm.tokenizer import CharTokenizer
from minippo.lm.model import GPT
from minippo.utils import shifted_seed

import datasets  # noqa: E402  (after minippo.lm.hf, which sets HF_HUB_OFFLINE before any Hugging Face import)
import trl  # noqa: E402
from transformers import GPT2LMHeadModel, PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

__all__ = [
    "METRIC_NAMES",
    "LOCAL_RUN",
    "grpo_fields",
    "rloo_fields",
    "trl_args",
    "TRLReward",
    "PositionsFromMask",
    "GRPOTrainer",
    "RLOOTrainer",
    "make_trainer",
    "train_trl",
    "quiet_transformers",
]

#: minippo's metric name -> the name TRL 1.16 logs for the same (or the nearest) quantity.
#: Units differ where noted in book/metrics.md: minippo's ``rlhf/kl_to_ref`` is a k1 sum per
#: response, TRL's ``kl`` a per-token mean (k3 for GRPO, k1 for RLOO).  ``<algorithm>`` is the
#: prefix the minippo trainer logs its update under: ``grpo`` or ``rloo``.
METRIC_NAMES = {
    "rlhf/score": "reward",
    "<algorithm>/reward_std": "reward_std",
    "grpo/zero_std_groups": "frac_reward_zero_std",
    "rlhf/kl_to_ref": "kl",
    "<algorithm>/entropy": "entropy",
    "<algorithm>/clip_fraction": "clip_ratio/region_mean",
    "<algorithm>/policy_loss": "loss",
    "<algorithm>/learning_rate": "learning_rate",
    "gen/mean_length": "completions/mean_length",
    "gen/truncation_rate": "completions/clipped_ratio",
    "rlhf/logprob_mismatch": "sampling/sampling_logp_difference/max",
}

#: TRL / transformers settings with no minippo counterpart: a local, CPU-only, float32 run that
#: writes and downloads nothing (TRL's defaults turn on bf16 and activation checkpointing).
LOCAL_RUN = dict(
    report_to="none", save_strategy="no", use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False,
    disable_tqdm=True, dataloader_num_workers=0, weight_decay=0.0, adam_epsilon=1e-5,  # Adam's eps, as minippo
    lr_scheduler_type="cosine_with_min_lr", top_k=0, top_p=1.0,  # sample from the full softmax, as minippo
)


def _common_fields(c, steps_per_iteration: int) -> list[tuple[str, str, object]]:
    return [
        ("group_size", "num_generations", c.group_size),
        ("max_new_tokens", "max_completion_length", c.max_new_tokens),
        ("temperature", "temperature", c.temperature),
        ("learning_rate", "learning_rate", c.learning_rate),
        ("warmup_iterations", "warmup_steps", c.warmup_iterations * steps_per_iteration),
        ("min_learning_rate", "lr_scheduler_kwargs", {"min_lr": c.min_learning_rate}),
        ("max_grad_norm", "max_grad_norm", c.max_grad_norm if c.max_grad_norm is not None else 0.0),
    ]


def grpo_fields(config: GRPOConfig) -> list[tuple[str, str, object]]:
    """``(minippo field, TRL field, TRL value)`` rows that make ``trl.GRPOConfig`` run ``config``.

    One minippo iteration (sample ``batch_size`` responses, then ``update_epochs`` passes of
    ``num_minibatches`` steps) is one TRL generation: ``steps_per_generation`` minibatch steps of
    ``per_device_train_batch_size`` responses, repeated ``num_iterations`` times.  TRL counts
    optimizer steps, so ``max_steps`` and ``warmup_steps`` are iterations times steps per iteration.
    """
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"config must be a minippo GRPOConfig, got {type(config).__name__}")
    steps = config.num_minibatches * config.update_epochs
    return [
        ("iterations", "max_steps", config.iterations * steps),
        ("prompts_per_batch x group_size", "generation_batch_size", config.batch_size),
        ("num_minibatches", "steps_per_generation", config.num_minibatches),
        ("batch_size / num_minibatches", "per_device_train_batch_size", config.batch_size // config.num_minibatches),
        ("update_epochs", "num_iterations", config.update_epochs),
        ("clip_eps", "epsilon", config.clip_eps),
        ("kl_coef", "beta", config.kl_coef),
        ("scale_rewards", "scale_rewards", "group" if config.scale_rewards else "none"),
        ("length_normalise", "loss_type", "grpo" if config.length_normalise else "dr_grpo"),
        *_common_fields(config, steps),
    ]


def rloo_fields(config: RLOOConfig) -> list[tuple[str, str, object]]:
    """``(minippo field, TRL field, TRL value)`` rows that make ``trl.RLOOConfig`` run ``config``.

    minippo's RLOO takes one REINFORCE step per batch; TRL's takes a ratio-clipped step on the
    sequence log-probability, which at ratio 1 (one step per batch) has the same gradient.
    """
    if not isinstance(config, RLOOConfig):
        raise TypeError(f"config must be a minippo RLOOConfig, got {type(config).__name__}")
    return [
        ("iterations", "max_steps", config.iterations),
        ("prompts_per_batch x group_size", "per_device_train_batch_size", config.batch_size),
        ("(one step per batch)", "steps_per_generation", 1),
        ("(one step per batch)", "num_iterations", 1),
        ("kl_coef", "beta", config.kl_coef),
        ("(no advantage whitening)", "normalize_advantages", False),
        *_common_fields(config, 1),
    ]


def trl_args(config: GRPOConfig | RLOOConfig, output_dir: str, seed: int = 0):
    """The ``trl.GRPOConfig`` or ``trl.RLOOConfig`` for a minippo config: its field rows, plus
    :data:`LOCAL_RUN`, plus one log row per minippo iteration and the run's (shifted) seed."""
    fields = grpo_fields(config) if isinstance(config, GRPOConfig) else rloo_fields(config)
    kwargs = {trl_name: value for _, trl_name, value in fields}
    kwargs.pop("generation_batch_size", None)  # TRL derives it: per-device batch x steps_per_generation
    per_iteration = kwargs["max_steps"] // config.iterations
    cls = trl.GRPOConfig if isinstance(config, GRPOConfig) else trl.RLOOConfig
    return cls(output_dir=output_dir, seed=shifted_seed(seed), logging_steps=per_iteration, **LOCAL_RUN, **kwargs)


class TRLReward:
    """A minippo ``reward_fn(prompts, responses, finished) -> (scores, metrics)`` as a TRL reward function.

    TRL passes the decoded completions (special tokens skipped) and their ids, cut after the
    first EOS; a completion is *finished* if its ids contain EOS, which the code reward needs for
    its missing-EOS penalty.  The ``code/...`` metrics go to TRL's log through ``log_metric``.
    """

    __name__ = "code_reward"  # TRL names the logged reward after the function: rewards/code_reward/mean

    def __init__(self, reward_fn: RewardFn, eos_id: int = CharTokenizer.eos_id):
        self.reward_fn = reward_fn
        self.eos_id = eos_id

    def __call__(self, prompts, completions, completion_ids, log_metric=None, **kwargs) -> list[float]:
        finished = torch.tensor([self.eos_id in ids for ids in completion_ids])  # (B,)
        scores, metrics = self.reward_fn(list(prompts), list(completions), finished)
        if log_metric is not None:
            for name, value in metrics.items():
                log_metric(name, float(value))
        return torch.as_tensor(scores, dtype=torch.float32).tolist()


class PositionsFromMask:
    """Calls ``model(**inputs)`` with ``position_ids`` derived from ``inputs["attention_mask"]`` when absent."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **inputs):
        if inputs.get("position_ids") is None:
            inputs["position_ids"] = hf.positions_from_mask(inputs["attention_mask"])  # (B, L)
        return self.model(**inputs)


class _PositionIdsFix:
    """The fix, for either trainer: TRL 1.16 computes every token log-prob (policy, old policy,
    reference) in ``_get_per_token_logps_and_entropies``, which calls ``model(**inputs)``; hand it
    the model wrapped so that those calls carry ``position_ids``."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, *args,
                                           **kwargs):
        return super()._get_per_token_logps_and_entropies(PositionsFromMask(model), input_ids,
                                                          attention_mask, *args, **kwargs)


class GRPOTrainer(_PositionIdsFix, trl.GRPOTrainer):
    """``trl.GRPOTrainer`` whose token log-probs are computed at the positions ``generate`` used."""


class RLOOTrainer(_PositionIdsFix, trl.RLOOTrainer):
    """``trl.RLOOTrainer`` whose token log-probs are computed at the positions ``generate`` used."""


def _history(log_history: list[dict], config, train_cpu_seconds: float) -> History:
    """TRL's log rows (one per minippo iteration) as a minippo History: TRL's names and minippo's.

    ``global_step`` is TRL's ``num_tokens``, the prompt and completion tokens seen so far
    (minippo's trainers count response tokens); ``responses`` counts sampled responses."""
    history = History(config=config)
    algorithm = "grpo" if isinstance(config, GRPOConfig) else "rloo"
    names = {ours.replace("<algorithm>", algorithm): theirs for ours, theirs in METRIC_NAMES.items()}
    rows = [row for row in log_history if "reward" in row]
    for i, row in enumerate(rows):
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        metrics.update({ours: row[theirs] for ours, theirs in names.items() if theirs in row})
        metrics["global_step"] = row.get("num_tokens", float("nan"))
        metrics["responses"] = (i + 1) * config.batch_size
        history.log_update(metrics)
    history.updates["time/train_cpu_seconds"] = [train_cpu_seconds] * len(history)
    return history


def make_trainer(policy: GPT, prompts: Sequence[str], reward_fn: RewardFn, config: GRPOConfig | RLOOConfig,
                 directory: str, *, tokenizer: CharTokenizer | None = None, seed: int = 0, fix_positions: bool = True):
    """A TRL trainer (GRPO for a ``GRPOConfig``, RLOO for an ``RLOOConfig``) for a copy of ``policy``.

    The converted model is saved in ``directory`` (TRL builds the reference model from the
    policy's checkpoint, ``config._name_or_path``) and loaded back from there; TRL writes nothing
    else (``save_strategy="no"``).  ``fix_positions=False`` gives TRL's own trainer.
    """
    if not isinstance(config, (GRPOConfig, RLOOConfig)):
        raise TypeError(f"config must be a minippo GRPOConfig or RLOOConfig, got {type(config).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must not be empty")
    tokenizer = tokenizer or CharTokenizer()
    is_grpo = isinstance(config, GRPOConfig)
    if fix_positions:
        trainer_cls = GRPOTrainer if is_grpo else RLOOTrainer
    else:
        trainer_cls = trl.GRPOTrainer if is_grpo else trl.RLOOTrainer
    hf.to_hf(policy, tokenizer).save_pretrained(directory)
    model = GPT2LMHeadModel.from_pretrained(directory)
    trainer = trainer_cls(model=model, reward_funcs=[TRLReward(reward_fn, tokenizer.eos_id)],
                          args=trl_args(config, directory, seed),
                          train_dataset=datasets.Dataset.from_dict({"prompt": prompts}),
                          processing_class=hf.hf_tokenizer(tokenizer))
    trainer.remove_callback(PrinterCallback)  # with disable_tqdm, the Trainer would print every log row
    return trainer


def train_trl(policy: GPT, prompts: Sequence[str], reward_fn: RewardFn, config: GRPOConfig | RLOOConfig, *,
              tokenizer: CharTokenizer | None = None, seed: int = 0,
              fix_positions: bool = True) -> tuple[GPT, History]:
    """Train a copy of ``policy`` with TRL's GRPO (``config`` a minippo ``GRPOConfig``) or RLOO
    (an ``RLOOConfig``); the reference is the policy as given.  Returns ``(trained GPT, history)``.

    ``history`` has one row per iteration with TRL's logged names, minippo's (:data:`METRIC_NAMES`),
    ``responses`` (sampled so far) and ``time/train_cpu_seconds`` (``trainer.train()`` only:
    TRL's sampling, scoring and updates, without converting and saving the model).
    ``fix_positions=False`` runs TRL's own trainer (see the module docstring).
    """
    with tempfile.TemporaryDirectory(prefix="minippo-trl-") as directory, quiet_transformers():
        trainer = make_trainer(policy, prompts, reward_fn, config, directory, tokenizer=tokenizer, seed=seed,
                               fix_positions=fix_positions)
        start = time.process_time()
        trainer.train()
        cpu = time.process_time() - start
        trained = hf.from_hf(trainer.model)
    return trained, _history(trainer.state.log_history, config, cpu)


@contextlib.contextmanager
def quiet_transformers():
    """No progress bars for saving and loading, and no FutureWarning that transformers 5 prints
    every step because TRL 1.16 still asks for ``is_gradient_checkpointing`` by its old name."""
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
