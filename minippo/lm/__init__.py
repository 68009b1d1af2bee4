"""minippo.lm: PPO for language models, from a tiny GPT to RLHF for code (chapters 6-9).

==================  ===========================================================================
``tokenizer``       character tokenizer with distinct PAD, BOS, EOS
``model``           tiny causal GPT with a zero-initialised value head; sampling, log-probs, masks
``codetask``        the code-generation task: specs, unit tests, sloppy SFT corpus, held-out split
``sandbox``         runs generated code in a fresh, locked-down process per program
``code_reward``     syntax / tests / quality reward (0.3 / 0.5 / 0.2) and the ``code/...`` metrics
``sft``             supervised fine-tuning (warm-up + cosine), cached SFT models
``reward_model``    Bradley-Terry reward model from preference pairs
``best_of_n``       best-of-n sampling: its KL to the reference, its expected reward from one pool
``rlhf``            RLHF-PPO: KL-penalised rewards, GAE with gamma = 1, clipped losses, KL control
``alternatives``    RLOO, GRPO / Dr. GRPO, DPO
``memory``          gradient accumulation and activation checkpointing, measured
``scaling``         memory arithmetic at scale: model states (ZeRO), activations, KV cache (ch. 10)
``hf``              the tiny GPT as a transformers GPT-2 and back, the tokenizer as a fast tokenizer
``trl_bridge``      minippo's GRPO/RLOO configs, reward and position-ids fix for Hugging Face TRL
==================  ===========================================================================

``hf`` and ``trl_bridge`` need the ``trl`` extra (``pip install "minippo[trl]"``) and are imported
explicitly, ``from minippo.lm import hf, trl_bridge``: ``import minippo`` never loads transformers.

Training loops return ``(model, history)`` and fine-tune the model they are given *in place*
(pass ``copy.deepcopy(sft_model)`` to keep the SFT model): ``sft.train_sft``,
``reward_model.train_reward_model``, ``rlhf.train`` (RLHF-PPO), ``alternatives.train_grpo`` /
``train_rloo`` / ``train_dpo``.

Shapes: B sequences, P prompt width (left-padded), R response width, L = P + R, V vocabulary,
D hidden width.
"""
from minippo.lm import (  # noqa: F401  (the modules, for mp.lm.rlhf.train etc.)
    alternatives, best_of_n, code_reward, codetask, memory, model, reward_model, rlhf, sandbox, scaling,
    sft, tokenizer,
)
from minippo.lm.tokenizer import CharTokenizer
from minippo.lm.model import (
    GPT, GPTConfig, Generation, generate, logprob_mismatch, response_logprobs, response_mask,
    sample_responses,
)
from minippo.lm.codetask import CodeSpec, CodeTask, CodeTaskConfig, CodeReward, body_kind, make_task
from minippo.lm.sft import SFTConfig, train_sft, pretrained_sft
from minippo.lm.reward_model import (
    PreferencePair, RewardModel, RewardModelConfig, RewardModelReward, bradley_terry_loss,
    sample_preference_pairs, split_pairs, train_reward_model,
)
from minippo.lm.rlhf import RLHFConfig, kl_penalized_rewards, kl_to_reference, evaluate, make_rollout
from minippo.lm.alternatives import (
    DPOConfig, GRPOConfig, RLOOConfig, dpo_loss, group_advantages, leave_one_out_advantages,
    preference_logprobs, train_dpo, train_grpo, train_rloo,
)
from minippo.lm.memory import accumulate_gradients, checkpointing_report
