"""The code reward: syntax, unit tests and quality, weighted 0.3/0.5/0.2, with the no-EOS
penalty and zero for sandbox violations (Chapter 8)."""
import os
from types import SimpleNamespace

import pytest

from minippo.lm import code_reward as cr
from minippo.lm.code_reward import code_rewards, composite_reward, quality_score, syntax_ok

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX")

ADD3 = SimpleNamespace(
    signature="def add3(x):",
    cases=[((1,), 4), ((0,), 3), ((-3,), 0), ((10,), 13)],
    reference_body="    return x + 3",
)
FIRST2 = SimpleNamespace(  # no reference: the default length budget applies
    signature="def first2(s):",
    cases=[(("hello",), "he"), (("",), "")],
)


def test_syntax_ok_parses_but_never_runs():
    sig = ADD3.signature
    assert syntax_ok("    return x + 3", sig)
    assert syntax_ok("    y = x + 3\n    return y\n", sig)
    assert syntax_ok("    while True:\n        pass", sig)  # parses; the sandbox deals with it
    for broken in ["    return x +", "    retrun x + 3", "return x + 3", "    return (x + 3", "",
                   "    return x + 3\nprint('outside the function')", "    return x + 3\ndef add3(x):\n    return 0",
                   "    return 'a\0b'"]:
        assert not syntax_ok(broken, sig), broken
    assert syntax_ok("    return x is 1", sig)  # parses (with a SyntaxWarning, which stays quiet)


def test_function_name_and_program():
    assert cr.function_name("def add3(x):") == "add3"
    assert cr.build_program("def add3(x):", "    return x + 3") == "def add3(x):\n    return x + 3"
    with pytest.raises(ValueError, match="signature"):
        cr.function_name("add3(x)")


def test_quality_score():
    sig, ref = ADD3.signature, ADD3.reference_body
    assert quality_score("    return x + 3", sig, ref) == 1.0
    assert quality_score("    return 3 + x  # add three\n\n", sig, ref) == 1.0  # comments, spacing free
    assert quality_score("    return x - 3", sig, ref) == 1.0  # quality is not correctness
    # budget 1.5 * len("return x + 3") = 18 characters; this body is 32 once normalised
    long = "    return x + 1 + 1 + 1 + 0 + 0 + 0"
    assert quality_score(long, sig, ref) == pytest.approx(18 / 32)
    assert quality_score("    return x + 3\n    x = 1", sig, ref) == 0.5  # dead code, 18 characters
    assert quality_score("    y = 3\n    return x + 3", sig, ref) == 0.5  # y is never read
    assert quality_score("    y = 3\n    return x + 3\n    z = 1", sig, ref) == pytest.approx(0.25 * 18 / 24)
    assert quality_score("    for _ in range(3):\n        x += 1\n    return x", sig) == 1.0  # 40-char budget
    assert quality_score("    pass", sig, ref) == 0.0
    assert quality_score("    '''Add three.'''", sig, ref) == 0.0
    assert quality_score("    return x +", sig, ref) == 0.0


def test_tight_length_budget_makes_every_character_cost():
    sig, ref = ADD3.signature, ADD3.reference_body  # the reference is 12 characters normalised
    # length_slack 0.5: a budget of 6 characters, so the reference itself scores 6 / 12
    assert quality_score(ref, sig, ref, length_slack=0.5) == pytest.approx(0.5)
    assert quality_score("    return 3", sig, ref, length_slack=0.5) == pytest.approx(6 / 8)
    assert quality_score("    return   x+3  # spacing is still free", sig, ref, length_slack=0.5) == pytest.approx(0.5)
    short, correct = code_rewards([ADD3] * 2, ["    return 3", ref], [True] * 2, length_slack=0.5).quality
    assert (short, correct) == (pytest.approx(6 / 8), pytest.approx(0.5))
    assert code_rewards([ADD3], [ref], [True]).quality == [1.0]  # the default slack is 1.5
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="length_slack"):
            quality_score(ref, sig, ref, length_slack=bad)
        with pytest.raises(ValueError, match="length_slack"):
            code_rewards([ADD3], [ref], [True], length_slack=bad)


def test_composite_weights():
    assert composite_reward(1, 1, 1) == pytest.approx(1.0)
    assert composite_reward(1, 0, 0) == pytest.approx(0.3)
    assert composite_reward(0, 1, 0) == pytest.approx(0.5)
    assert composite_reward(0, 0, 1) == pytest.approx(0.2)
    assert composite_reward(1, 0.5, 0.5, weights=(0.0, 1.0, 1.0)) == pytest.approx(1.0)


def test_code_rewards_per_candidate_and_metrics():
    bodies = [
        "    return x + 3",  # correct: 1.0
        "    return x + 2",  # wrong: syntax 1, tests 0, quality 1 -> 0.5
        "    return x + 3 if x > 0 else 3",  # 3 of 4 tests (fails add3(-3)), long
        "    return x +",  # syntax error: 0
        "    return x + 3",  # correct but no EOS: 1 - 1 = 0
        "    while True:\n        pass",  # violation: 0 however it parses
        "    return x +",  # broken and no EOS: -1
    ]
    finished = [True, True, True, True, False, True, False]
    out = code_rewards([ADD3] * len(bodies), bodies, finished)
    q2 = quality_score(bodies[2], ADD3.signature, ADD3.reference_body)
    assert out.syntax == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    assert out.tests == [1.0, 0.0, 0.75, 0.0, 1.0, 0.0, 0.0]
    assert out.quality[:2] == [1.0, 1.0] and out.quality[3] == 0.0 and 0 < q2 < 1
    expected = [1.0, 0.5, 0.3 + 0.5 * 0.75 + 0.2 * q2, 0.0, 0.0, 0.0, -1.0]
    assert out.rewards == pytest.approx(expected)
    assert out.results[3] is None and out.results[5].status == "timeout"
    assert out.finished == finished
    m = out.metrics
    assert m["code/syntax_success_rate"] == pytest.approx(5 / 7)
    assert m["code/avg_test_pass_rate"] == pytest.approx(2.75 / 7)
    assert m["code/quality_score"] == pytest.approx(sum(out.quality) / 7)
    assert m["code/missing_eos_rate"] == pytest.approx(2 / 7)
    assert m["code/violation_rate"] == pytest.approx(1 / 7)
    assert "code/hidden_test_pass_rate" not in m


def test_hostile_bodies_earn_nothing():
    bodies = ["    import os\n    os.system('true')", "    return ().__class__", "    raise SystemExit",
              "    return [0] * 10 ** 10", "    return add3(x + 1)", "    return open('f').read()",
              "    class A:\n        def __eq__(self, other):\n            return True\n    return A()"]
    out = code_rewards([ADD3] * len(bodies), bodies, [True] * len(bodies))
    assert out.rewards == [0.0] * len(bodies)
    assert all(r.violation for r in out.results)
    assert out.syntax == [1.0] * len(bodies)  # measured as written; the violation zeroes the reward


def test_hidden_tests_are_reported_but_never_rewarded():
    weak = SimpleNamespace(signature=ADD3.signature, cases=ADD3.cases[1:2], hidden_cases=ADD3.cases[:1] + ADD3.cases[2:],
                           reference_body=ADD3.reference_body)
    # "return 3" passes the visible test add3(0) == 3 and none of the hidden ones;
    # the last body loops forever on hidden inputs only: its reward must not notice.
    bodies = ["    return 3", "    return x + 3", "    return x +",
              "    while x != 0:\n        pass\n    return 3"]
    out = code_rewards([weak] * 4, bodies, [True] * 4)
    assert out.tests == [1.0, 1.0, 0.0, 1.0]
    assert out.hidden == [0.0, 1.0, 0.0, 0.0]
    assert out.rewards[0] == out.rewards[1] == 1.0 and out.rewards[3] > 0.9
    assert out.metrics["code/hidden_test_pass_rate"] == pytest.approx(0.25)


def test_identical_programs_run_once(monkeypatch):
    seen = []
    real = cr.run_cases

    def counting(programs, names, cases, **kwargs):
        seen.append(len(programs))
        return real(programs, names, cases, **kwargs)

    monkeypatch.setattr(cr, "run_cases", counting)
    out = code_rewards([ADD3] * 6 + [FIRST2] * 2, ["    return x + 3"] * 6 + ["    return s[:2]"] * 2, [True] * 8)
    assert seen == [2]
    assert out.rewards == [1.0] * 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="same length"):
        code_rewards([ADD3], ["    return x + 3"], [True, False])
    with pytest.raises(ValueError, match="weights"):
        code_rewards([ADD3], ["    return x + 3"], [True], weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="missing_eos_penalty"):
        code_rewards([ADD3], ["    return x + 3"], [True], missing_eos_penalty=-1.0)


def test_a_batch_of_64_scores_each_body_on_its_own():
    """64 distinct bodies (8 kinds, padded with spaces, which change neither the program's meaning
    nor its quality) score as their kind does alone. The batch's speed is measured in
    benchmarks/sandbox_speed.py (figures in the README)."""
    kinds = ["    return x + 3", "    return x - 3", "    return 3", "    retrun x + 3",
             "    return x +", "    y = x + 3\n    return y", "    return x + 3 if x else 3", "    return -x"]
    bodies = [kinds[i % len(kinds)] + " " * (i // len(kinds)) for i in range(64)]  # 64 distinct programs
    alone = [code_rewards([ADD3], [kind], [True]).rewards[0] for kind in kinds]
    out = code_rewards([ADD3] * 64, bodies, [True] * 64)
    assert out.metrics["code/syntax_success_rate"] == pytest.approx(6 / 8)
    assert list(out.rewards) == pytest.approx(alone * 8)
    assert len(set(alone)) >= 5  # the kinds do score differently


def test_every_reference_body_of_the_code_task_earns_full_reward():
    codetask = pytest.importorskip("minippo.lm.codetask")
    specs = codetask.make_specs()
    out = code_rewards(specs, [s.reference_body for s in specs], [True] * len(specs))
    assert out.rewards == [1.0] * len(specs)
