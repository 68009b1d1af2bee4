"""The reward for generated code: syntax, unit tests and quality (Chapter 8).

Chapter 8 (``chapters/08_capstone_rlhf_code.ipynb``) fine-tunes a tiny GPT with PPO to write
function bodies. The source material's reward has three parts, and so does this one:

.. math::

    r_\\text{code} = 0.3\\,r_\\text{syntax} + 0.5\\,r_\\text{tests} + 0.2\\,r_\\text{quality}
        \\;-\\; \\text{missing\\_eos\\_penalty}\\cdot\\mathbb 1[\\text{no EOS}]

* :func:`syntax_ok` -- 1 if ``signature + "\\n" + body`` parses as exactly one function
  definition (the body may not dedent and add code outside the function). Only
  :func:`ast.parse`: nothing is executed.
* tests -- the fraction of the spec's ``cases`` that pass: :func:`minippo.lm.sandbox.run_cases`
  calls the function on each case's arguments in a fresh, locked-down process and the answer
  is checked here (the sandbox's contract, :mod:`minippo.lm.sandbox`: model-written code never
  runs in the reader's Python process and never sees the expected answers).
* :func:`quality_score` -- a measurable notion of clean code, documented there.

Two rules sit on top of the weighted sum. A program the sandbox refused or had to stop
(:data:`~minippo.lm.sandbox.VIOLATIONS`: forbidden names, time or memory limit, a crashed
process, an unreadable message) earns **0** in place of the sum, so a policy never gains from hostile code. A
generation that hit the length limit without EOS loses ``missing_eos_penalty`` (default 1.0,
as TRL's ``missing_eos_penalty`` subtracts from the score), so every finished answer
(reward >= 0) beats every truncated one (reward <= 0).

Spec protocol (what :mod:`minippo.lm.codetask` provides; any object with these attributes):

==================  =========================================================================
``signature``       ``str``, the ``def`` line the prompt ends with: ``"def add3(x):"``
``cases``           ``list`` of unit tests as data, ``(args, expected)``: ``((1,), 4)`` says
                    ``add3(1) == 4``; the reward uses these
``hidden_cases``    optional, the same form: run as separate sandbox programs, reported as the
                    metric ``code/hidden_test_pass_rate``, never part of the reward
``reference_body``  optional ``str``: a correct body, ``"    return x + 3"``; sets the length
                    budget of :func:`quality_score`
==================  =========================================================================

A body is what the model wrote after the prompt ``signature + "\\n"``, indentation included
(``"    return x + 3"``), without the EOS token.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from minippo.lm.sandbox import Result, parse_or_none, run_cases

__all__ = [
    "REWARD_WEIGHTS",
    "MISSING_EOS_PENALTY",
    "CodeRewards",
    "function_name",
    "build_program",
    "syntax_ok",
    "quality_score",
    "composite_reward",
    "code_rewards",
]

#: Weights of syntax, tests and quality: the source material's 30% / 50% / 20%.
REWARD_WEIGHTS = (0.3, 0.5, 0.2)
#: Subtracted from the reward of a generation without EOS (TRL's ``missing_eos_penalty``).
MISSING_EOS_PENALTY = 1.0
#: Length budget of a body, in characters of normalised code, when the spec has no reference.
DEFAULT_LENGTH_BUDGET = 40
#: A body may be this many times as long as the reference before its quality decays.
LENGTH_SLACK = 1.5
#: Quality is multiplied by this for each kind of smell found (dead code, unused assignment).
SMELL_FACTOR = 0.5


@lru_cache(maxsize=4096)
def function_name(signature: str) -> str:
    """The name a ``def`` line defines: ``function_name("def add3(x):") == "add3"``."""
    tree = parse_or_none(signature.rstrip() + "\n    pass")
    if tree is None or len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        raise ValueError(f"signature must be one 'def name(args):' line, got {signature!r}")
    return tree.body[0].name


def build_program(signature: str, body: str) -> str:
    """The program the sandbox runs: the prompt (``signature`` and a newline) plus the body."""
    return signature.rstrip("\n") + "\n" + body


@lru_cache(maxsize=8192)  # identical bodies are common in a PPO batch; the tree is only read
def _function_def(body: str, signature: str) -> ast.FunctionDef | None:
    """The parsed function if ``body`` completes ``signature`` to exactly one definition."""
    tree = parse_or_none(build_program(signature, body))
    if tree is None or len(tree.body) != 1:
        return None
    fn = tree.body[0]
    return fn if isinstance(fn, ast.FunctionDef) and fn.name == function_name(signature) else None


def syntax_ok(body: str, signature: str) -> bool:
    """True if ``signature`` + newline + ``body`` parses as one definition of that function.

    Parsing only (:func:`ast.parse`), never execution. A body that dedents and adds statements
    after the function is not a body and fails: the reward is for the function, and module-level
    code could shadow names the tests use (``sorted = ...``).
    """
    return _function_def(body, signature) is not None


def quality_score(body: str, signature: str, reference_body: str | None = None,
                  length_slack: float = LENGTH_SLACK) -> float:
    """How clean a body is, in [0, 1]; 0 for a body that does not pass :func:`syntax_ok`.

    The source material scores "complexity, readability, documentation" without saying how.
    For one-line functions we measure instead:

    .. math::

        r_\\text{quality} = \\min\\Big(1, \\frac{\\text{budget}}{\\text{length}}\\Big)\\cdot
            0.5^{[\\text{dead code}] + [\\text{unused assignment}]}

    * **length** is the number of characters of the body's normalised code
      (:func:`ast.unparse`: comments, blank lines and spacing do not count);
      ``budget = length_slack * length(reference_body)`` (``length_slack`` 1.5 by default), or
      40 characters without a reference. A body no longer than the budget scores 1; a body twice
      the budget scores 0.5. With ``length_slack < 1`` even the reference is over budget, so
      every character costs a little: the tight budget of chapter 8's reward-hacking lab, under
      which the shortest answer that passes the tests scores best.
    * **dead code**: a statement after ``return``, ``raise``, ``break`` or ``continue`` in the
      same block.
    * **unused assignment**: a name that is assigned but never read (``_`` excepted).
    * A body that does nothing (only ``pass``, ``...`` or a docstring), or that is nested too
      deeply to print back, scores 0.
    """
    if not length_slack > 0:
        raise ValueError(f"length_slack must be in (0, inf), got {length_slack!r}")
    fn = _function_def(body, signature)
    if fn is None:
        return 0.0
    if all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
           for s in fn.body):
        return 0.0
    try:
        length = len(_normalised(fn.body))
    except RecursionError:  # ast.unparse recurses; only absurdly nested code gets here
        return 0.0
    budget = DEFAULT_LENGTH_BUDGET if reference_body is None else length_slack * _reference_length(reference_body)
    smells = _has_dead_code(fn) + _has_unused_assignment(fn)
    return min(1.0, budget / max(length, 1)) * SMELL_FACTOR**smells


def _normalised(statements: list[ast.stmt]) -> str:
    return ast.unparse(ast.Module(body=statements, type_ignores=[]))


@lru_cache(maxsize=4096)
def _reference_length(reference_body: str) -> int:
    tree = parse_or_none("def f():\n" + reference_body)
    if tree is None or len(tree.body) != 1:
        raise ValueError(f"reference_body must be a function body, got {reference_body!r}")
    return max(len(_normalised(tree.body[0].body)), 1)


def _has_dead_code(fn: ast.FunctionDef) -> bool:
    for node in ast.walk(fn):
        for _, block in ast.iter_fields(node):
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                jumps = [isinstance(s, (ast.Return, ast.Raise, ast.Break, ast.Continue)) for s in block]
                if any(jumps[:-1]):
                    return True
    return False


def _has_unused_assignment(fn: ast.FunctionDef) -> bool:
    names = [n for n in ast.walk(fn) if isinstance(n, ast.Name)]
    stored = {n.id for n in names if isinstance(n.ctx, ast.Store)} - {"_"}
    loaded = {n.id for n in names if isinstance(n.ctx, ast.Load)}
    return bool(stored - loaded)


def composite_reward(syntax: float, tests: float, quality: float,
                     weights: Sequence[float] = REWARD_WEIGHTS) -> float:
    """The weighted sum of the three parts: by default
    :math:`0.3\\,r_\\text{syntax} + 0.5\\,r_\\text{tests} + 0.2\\,r_\\text{quality}`.

    The source material's weighting of the code reward (Chapter 8); each part lies in [0, 1].
    """
    w_syntax, w_tests, w_quality = weights
    return w_syntax * syntax + w_tests * tests + w_quality * quality


@dataclass(frozen=True)
class CodeRewards:
    """Per-candidate scores of one batch (lists of length B) and the batch's metrics.

    ``rewards`` is what PPO maximises; ``syntax``, ``tests`` and ``quality`` are the three parts
    as measured (before the violation and EOS rules; ``tests`` is the share of the visible cases
    passed); ``hidden`` is the hidden-case pass rate (``None`` where the spec has no hidden
    cases); ``results`` are the sandbox's results for the visible cases (``None`` where the
    body failed :func:`syntax_ok` and never ran).
    """

    rewards: list[float]
    syntax: list[float]
    tests: list[float]
    quality: list[float]
    hidden: list[float | None]
    finished: list[bool]
    results: list[Result | None]
    metrics: dict[str, float]


def code_rewards(
    specs: Sequence[Any],
    bodies: Sequence[str],
    finished: Sequence[bool],
    *,
    weights: Sequence[float] = REWARD_WEIGHTS,
    missing_eos_penalty: float = MISSING_EOS_PENALTY,
    length_slack: float = LENGTH_SLACK,
    timeout_s: float = 0.05,
    memory_mb: int = 256,
) -> CodeRewards:
    """Score a batch of generated bodies: rewards for PPO and the ``code/...`` metrics.

    ``specs[b]`` is the spec body ``b`` answers (see the module docstring for the protocol),
    ``bodies[b]`` the generated text without EOS, ``finished[b]`` whether the generation ended
    with EOS; ``length_slack`` sets the length budget of :func:`quality_score`. Every body that
    parses is run in **one** sandbox batch (identical programs once). Reward per body:

    .. math::

        r_\\text{code} = \\begin{cases} 0 & \\text{sandbox violation} \\\\
            0.3\\,r_\\text{syntax} + 0.5\\,r_\\text{tests} + 0.2\\,r_\\text{quality}
            & \\text{otherwise} \\end{cases}
            \\;-\\; \\text{missing\\_eos\\_penalty}\\cdot\\mathbb 1[\\text{no EOS}]

    Metrics: ``code/syntax_success_rate``, ``code/avg_test_pass_rate``, ``code/quality_score``
    (means over the batch), ``code/missing_eos_rate``, ``code/violation_rate`` and, when some
    spec has hidden cases, ``code/hidden_test_pass_rate`` (mean over those bodies).
    """
    n = len(bodies)
    if len(specs) != n or len(finished) != n:
        raise ValueError(
            f"specs, bodies and finished must have the same length, got {len(specs)}, {n} and {len(finished)}"
        )
    if len(weights) != 3 or any(not w >= 0 for w in weights):
        raise ValueError(f"weights must be three non-negative numbers, got {tuple(weights)!r}")
    if not missing_eos_penalty >= 0:
        raise ValueError(f"missing_eos_penalty must be in [0, inf), got {missing_eos_penalty!r}")
    if not length_slack > 0:
        raise ValueError(f"length_slack must be in (0, inf), got {length_slack!r}")
    finished = [bool(f) for f in finished]

    syntax = [float(syntax_ok(body, spec.signature)) for spec, body in zip(specs, bodies)]
    quality = [quality_score(body, spec.signature, getattr(spec, "reference_body", None), length_slack)
               if ok else 0.0
               for spec, body, ok in zip(specs, bodies, syntax)]

    # One sandbox program per distinct (program, cases); hidden cases are separate programs, so
    # a hidden case that loops forever cannot take the visible cases' reward down with it.
    runs: dict[tuple[str, str], int] = {}
    programs, names, case_lists = [], [], []
    visible_item, hidden_item = [None] * n, [None] * n
    for b, (spec, body) in enumerate(zip(specs, bodies)):
        if not syntax[b]:
            continue
        program = build_program(spec.signature, body)
        for cases, slot in ((spec.cases, visible_item), (getattr(spec, "hidden_cases", None), hidden_item)):
            if cases:
                key = (program, repr(cases))
                if key not in runs:
                    runs[key] = len(programs)
                    programs.append(program)
                    names.append(function_name(spec.signature))
                    case_lists.append(cases)
                slot[b] = runs[key]
    ran = run_cases(programs, names, case_lists, timeout_s=timeout_s, memory_mb=memory_mb)

    results = [None if k is None else ran[k] for k in visible_item]
    tests = [0.0 if r is None else r.pass_rate for r in results]
    hidden = [None if k is None else ran[k].pass_rate for k in hidden_item]
    for b, spec in enumerate(specs):
        if getattr(spec, "hidden_cases", None) and hidden[b] is None:
            hidden[b] = 0.0  # a body that does not parse passes no hidden case either
    violation = [r is not None and r.violation for r in results]
    rewards = [
        (0.0 if bad else composite_reward(s, t, q, weights)) - (0.0 if done else missing_eos_penalty)
        for s, t, q, bad, done in zip(syntax, tests, quality, violation, finished)
    ]

    metrics = {
        "code/syntax_success_rate": _mean(syntax),
        "code/avg_test_pass_rate": _mean(tests),
        "code/quality_score": _mean(quality),
        "code/missing_eos_rate": _mean([float(not f) for f in finished]),
        "code/violation_rate": _mean([float(v) for v in violation]),
    }
    scored_hidden = [h for h in hidden if h is not None]
    if scored_hidden:
        metrics["code/hidden_test_pass_rate"] = _mean(scored_hidden)
    return CodeRewards(rewards, syntax, tests, quality, hidden, finished, results, metrics)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
