"""The code task: specs satisfy the reward's protocol, references pass, the corpus is sloppy as designed."""
import collections

import pytest
import torch

from minippo.lm.code_reward import code_rewards
from minippo.lm.codetask import (
    FAMILIES,
    CodeTaskConfig,
    body_kind,
    make_specs,
    make_task,
    sft_corpus,
)
from minippo.lm.sft import sft_batch
from minippo.lm.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def task():
    return make_task()


def test_reference_bodies_score_one_and_mistakes_do_not(task):
    specs = task.specs
    scored = code_rewards(specs, [s.reference_body for s in specs], [True] * len(specs))
    assert scored.rewards == [1.0] * len(specs)
    mistakes = ["    return " + FAMILIES[s.family].mistake.format(k=s.k) for s in specs]
    scored = code_rewards(specs, mistakes, [True] * len(specs))
    assert all(t < 1.0 for t in scored.tests) and all(x == 1.0 for x in scored.syntax)


def test_split_keeps_every_family_and_digit_in_training(task):
    assert len(task.train) + len(task.heldout) == len(make_specs())
    assert {s.name for s in task.train}.isdisjoint({s.name for s in task.heldout})
    assert {s.family for s in task.train} == set(FAMILIES)
    assert {s.k for s in task.train} == set(range(1, 10))
    assert 10 <= len(task.heldout) <= 25
    assert {p for p, _ in task.corpus} <= {s.prompt for s in task.train}


def test_corpus_is_a_mixture_with_headroom(task):
    kinds = collections.Counter(body_kind(task.spec_of(p), b) for p, b in task.corpus)
    n = len(task.corpus)
    assert kinds["other"] == 0
    assert 0.3 < kinds["correct"] / n < 0.5 and 0.1 < kinds["broken"] / n < 0.2
    specs = [task.spec_of(p) for p, _ in task.corpus]
    scored = code_rewards(specs, [b for _, b in task.corpus], [True] * n)
    assert 0.75 < scored.metrics["code/syntax_success_rate"] < 0.95
    assert 0.35 < scored.metrics["code/avg_test_pass_rate"] < 0.7
    hard = collections.Counter(body_kind(task.spec_of(p), b) for p, b in task.corpus if FAMILIES[task.spec_of(p).family].hard)
    assert hard["mistake"] > hard["correct"]  # greedy decoding is wrong on the hard families


def test_weak_tests_variant_lets_a_constant_pass(task):
    weak = make_task(CodeTaskConfig(weak_tests=True))
    spec = next(s for s in weak.specs if s.name == "add3")
    assert len(spec.cases) == 1 and len(spec.hidden_cases) == 3
    assert spec.cases == [((0,), 3)] and spec.all_cases[1:] == spec.hidden_cases
    scored = code_rewards([spec, spec], ["    return 3", spec.reference_body], [True, True])
    assert scored.tests == [1.0, 1.0] and scored.hidden == [0.0, 1.0]
    assert scored.metrics["code/hidden_test_pass_rate"] == 0.5


def test_config_validation_and_determinism():
    with pytest.raises(ValueError, match="must be 1"):
        CodeTaskConfig(p_correct=0.9)
    with pytest.raises(ValueError, match="families"):
        CodeTaskConfig(families=("nope",))
    specs = make_specs()
    assert sft_corpus(specs) == sft_corpus(specs)
    assert sft_corpus(specs) != sft_corpus(specs, CodeTaskConfig(seed=1))


def test_sequences_fit_the_model(task):
    tokens, attn, loss_mask = sft_batch(CharTokenizer(), task.corpus)
    assert tokens.shape[1] <= 48  # GPTConfig().block_size
    assert 1 + task.max_prompt_len + 24 <= 48  # prompt + max_new_tokens during RL
    # the loss covers the body and EOS, not the prompt
    row = task.corpus[0]
    assert int(loss_mask[0].sum()) == len(row[1]) + 1


def test_code_reward_fn_maps_prompts_to_specs(task):
    reward = task.reward_fn()
    s = task.train[0]
    scores, metrics = reward([s.prompt, s.prompt], [s.reference_body, "    return ("], torch.tensor([True, False]))
    assert scores.tolist() == [1.0, -1.0]
    assert metrics["code/syntax_success_rate"] == 0.5
