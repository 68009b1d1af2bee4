"""The grader (minippo/grade.py, minippo/grade_kernel.py): a synthetic class, built from the
student edition of chapters 2 and 4, graded end to end; and the parts that need no kernel.

The class: a perfect submission (the solutions filled in), the untouched student edition,
wrong answers of each kind the checkers report, a looping function, an endless loop at
definition, a notebook that patches ``mp.checks`` to always pass, one that redefines the
checker and prints a fake tick, one that replaces the reference, a renamed function, an empty
file, one that exhausts memory, one that kills its kernel, one that raises at import and one
that deletes the files of its working directory. Every other student must be graded normally,
and the instructor's files must not change.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import os
import re
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from minippo import advantages, checks, grade as grader  # noqa: E402
from minippo.grade_kernel import Recorder, Replay, ReplayMismatch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CH02, CH04 = "02_value_functions_gae", "04_ppo_clipped_objective"
TIMEOUT = 8.0  # per exercise; a correct exercise here takes well under a second


# ----------------------------------------------------------------------------- building a class
spec = importlib.util.spec_from_file_location("synthetic_class", ROOT / "scripts" / "synthetic_class.py")
synthetic_class = importlib.util.module_from_spec(spec)
spec.loader.exec_module(synthetic_class)


def pristine(name: str):
    return nbformat.read(ROOT / "chapters" / f"{name}.ipynb", as_version=4)


def student_edition(name: str):
    return synthetic_class.strip_notebook(pristine(name))


def solution_code(name: str, label: str) -> str:
    return synthetic_class.solution_code(pristine(name), label)


def submission(name: str, answers: dict[str, str]):
    """The student edition of chapter ``name`` with the stubs of ``answers`` replaced."""
    return synthetic_class.fill(student_edition(name), answers)


TD = solution_code(CH02, "ch02-ex-td")
GAE = solution_code(CH02, "ch02-ex-gae")
SURROGATE = solution_code(CH04, "ch04-ex-implement")
TANH = solution_code(CH04, "ch04-ex-tanh")
GAE_ALONE = GAE.replace("my_td_residuals(rewards, values, next_values, terminated, gamma)",
                        "rewards + gamma * (~terminated) * next_values - values")
assert GAE_ALONE != GAE  # a GAE that does not call my_td_residuals

# Wrong answers, one per kind of message the checkers give.
WRONG_TD = {
    "values": TD.replace("gamma * not_term * next_values", "gamma * next_values"),
    "shape": TD.replace("- values  # (T, B)", "- values)[:-1]  # (T, B)").replace("return rewards", "return (rewards"),
    "dtype": TD.replace("- values  # (T, B)", "- values).double()  # (T, B)").replace("return rewards", "return (rewards"),
    "none": TD.replace("return rewards", "rewards"),
    "numpy": TD.replace("- values  # (T, B)", "- values).numpy()  # (T, B)").replace("return rewards", "return (rewards"),
    "in-place": TD.replace("return rewards", "rewards.zero_()\n    return rewards"),
    "raises": TD.replace("return rewards", "raise ValueError('oops')\n    return rewards"),
}
WRONG_SURROGATE = {
    "detached": SURROGATE.replace(".mean()", ".mean().detach()"),
    "sign": SURROGATE.replace("return -", "return "),
}
EXPECTED_FEEDBACK = {
    "values": "differ; first difference at index",
    "shape": "wrong shape",
    "dtype": "wrong dtype",
    "none": "returned None",
    "numpy": "expected a torch.Tensor, got ndarray",
    "in-place": "modified its input `rewards` in place",
    "raises": "raised ValueError: oops",
    "detached": "does not depend on its first argument through autograd",
    "sign": "the loss: expected",
}


def write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """Grade the synthetic class once; return the rows, the CSV text, the printed table."""
    subs = tmp_path_factory.mktemp("submissions")
    both = {"ch02-ex-td": TD, "ch02-ex-gae": GAE}
    write(submission(CH02, both), subs / "perfect" / f"{CH02}.ipynb")
    write(submission(CH04, {"ch04-ex-implement": SURROGATE, "ch04-ex-tanh": TANH}), subs / "perfect" / f"{CH04}.ipynb")
    write(student_edition(CH02), subs / "untouched.ipynb")
    for kind, code in WRONG_TD.items():
        write(submission(CH02, {"ch02-ex-td": code, "ch02-ex-gae": GAE_ALONE}),
              subs / f"wrong-{kind}" / f"{CH02}.ipynb")
    for kind, code in WRONG_SURROGATE.items():
        write(submission(CH04, {"ch04-ex-implement": code}), subs / f"wrong-{kind}" / f"{CH04}.ipynb")
    looping_call = TD.replace('    """delta_t', '    while True:\n        pass\n    """delta_t')
    write(submission(CH02, {"ch02-ex-td": looping_call, "ch02-ex-gae": GAE_ALONE}),
          subs / "looping" / f"{CH02}.ipynb")
    write(submission(CH02, {"ch02-ex-td": "while True:\n    pass\n" + TD, "ch02-ex-gae": GAE_ALONE}),
          subs / "looping-at-definition" / f"{CH02}.ipynb")
    # Wrong answers hidden behind a tampered checker: the kernel's checker would say they pass.
    patch = ("mp.checks.check = lambda *args, **kwargs: True\n"
             "mp.checks.check_td_residuals = mp.checks.check_gae = lambda *a, **k: True\n")
    write(submission(CH02, {"ch02-ex-td": patch + WRONG_TD["values"], "ch02-ex-gae": GAE}),
          subs / "patches-checks" / f"{CH02}.ipynb")
    fake = ("def check_td_residuals(fn):\n    print('✓ td_residuals matches the reference on 20 random cases')\n"
            "    return True\nmp.checks.check_td_residuals = check_td_residuals\n"
            "check_td_residuals(my_td_residuals)\n")
    write(submission(CH02, {"ch02-ex-td": WRONG_TD["values"] + "\n" + fake, "ch02-ex-gae": GAE}),
          subs / "fake-checker" / f"{CH02}.ipynb")
    reference = "mp.advantages.td_residuals = lambda *args: my_td_residuals(*args)\n"
    write(submission(CH02, {"ch02-ex-td": WRONG_TD["values"] + "\n" + reference, "ch02-ex-gae": GAE}),
          subs / "replaces-reference" / f"{CH02}.ipynb")
    write(submission(CH02, {"ch02-ex-td": TD.replace("def my_td_residuals", "def my_td"),
                            "ch02-ex-gae": GAE_ALONE}), subs / "renamed" / f"{CH02}.ipynb")
    (subs / "empty").mkdir()
    (subs / "empty" / f"{CH02}.ipynb").write_bytes(b"")
    (subs / "empty-flat.ipynb").write_bytes(b"")
    hog = ("def hog():  # 256 MB at a time, untouched, so that it is quick\n    keep = []\n"
           "    while True:\n        keep.append(np.empty(2**25))\nhog()\n")
    write(submission(CH02, {"ch02-ex-td": TD, "ch02-ex-gae": hog + GAE}),
          subs / "memory" / f"{CH02}.ipynb")
    write(submission(CH02, {"ch02-ex-td": "import os\nos._exit(3)\n" + TD, "ch02-ex-gae": GAE_ALONE}),
          subs / "kills-kernel" / f"{CH02}.ipynb")
    write(submission(CH02, {"ch02-ex-td": "import no_such_module_here\n" + TD, "ch02-ex-gae": GAE_ALONE}),
          subs / "raises-at-import" / f"{CH02}.ipynb")
    deleter = ("import os, shutil\nfor p in os.listdir('.'):\n"
               "    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)\n"
               "open('junk.txt', 'w').write('x')\n")
    write(submission(CH02, {"ch02-ex-td": deleter + TD, "ch02-ex-gae": GAE}),
          subs / "deletes-files" / f"{CH02}.ipynb")

    chapters = tmp_path_factory.mktemp("chapters")  # the instructor's copy, with one weight
    ch02 = pristine(CH02)
    gae_cell = next(c for c in ch02.cells if ":label: ch02-ex-gae" in c.source)
    gae_cell.metadata["tags"] = ["points-2"]
    write(ch02, chapters / f"{CH02}.ipynb")
    write(pristine(CH04), chapters / f"{CH04}.ipynb")

    before = {"subs": tree_digest(subs), "chapters": tree_digest(chapters)}
    temp_before = set(Path(tempfile.gettempdir()).glob("minippo-grade-*"))
    out = subs.parent / "grades.csv"
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert grader.main([str(subs), "--out", str(out), "--chapters", str(chapters),
                            "--timeout", str(TIMEOUT), "--jobs", "2", "--quiet"]) == 0
    assert tree_digest(subs) == before["subs"], "grading changed the submissions"
    assert tree_digest(chapters) == before["chapters"], "grading changed the instructor's chapters"
    assert set(Path(tempfile.gettempdir()).glob("minippo-grade-*")) == temp_before, (
        "a kernel's working directory was left behind")
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    return {(r["student"], r["exercise"]): r for r in rows}, rows, printed.getvalue()


def status(graded, student, exercise):
    return graded[0][student, exercise]["status"]


def feedback(graded, student, exercise):
    return graded[0][student, exercise]["feedback"]


# ----------------------------------------------------------------------------- the class
def test_perfect_submission_passes_everything_with_the_checkers_line(graded_class):
    for label in ("ch02-ex-td", "ch02-ex-gae", "ch04-ex-implement", "ch04-ex-tanh"):
        assert status(graded_class, "perfect", label) == "passed", feedback(graded_class, "perfect", label)
    assert feedback(graded_class, "perfect", "ch02-ex-gae") == "✓ gae matches the reference on 20 random cases"
    assert graded_class[0]["perfect", "ch02-ex-gae"]["points"] == "2"  # the points-2 tag
    assert graded_class[0]["perfect", "ch02-ex-td"]["points"] == "1"  # the default


def test_untouched_student_edition_is_not_attempted(graded_class):
    for label in ("ch02-ex-td", "ch02-ex-gae"):
        assert status(graded_class, "untouched", label) == "not attempted"
        assert graded_class[0]["untouched", label]["points"] == "0"


@pytest.mark.parametrize("kind", [*WRONG_TD, *WRONG_SURROGATE])
def test_each_kind_of_wrong_answer_fails_with_the_checkers_reason(graded_class, kind):
    label = "ch02-ex-td" if kind in WRONG_TD else "ch04-ex-implement"
    assert status(graded_class, f"wrong-{kind}", label) == "failed"
    assert EXPECTED_FEEDBACK[kind] in feedback(graded_class, f"wrong-{kind}", label)
    if kind in WRONG_TD:  # the next exercise is graded on its own
        assert status(graded_class, f"wrong-{kind}", "ch02-ex-gae") == "passed"


def test_a_looping_function_times_out_and_the_next_exercise_is_graded(graded_class):
    for student in ("looping", "looping-at-definition"):
        assert status(graded_class, student, "ch02-ex-td") == "error"
        assert "timed out" in feedback(graded_class, student, "ch02-ex-td")
        assert status(graded_class, student, "ch02-ex-gae") == "passed"


def test_patching_the_checkers_in_the_notebook_gains_nothing(graded_class):
    # a patched or redefined checker never calls the function on the checker's cases
    for student in ("patches-checks", "fake-checker"):
        assert status(graded_class, student, "ch02-ex-td") == "error"
        assert "did the notebook change minippo.checks" in feedback(graded_class, student, "ch02-ex-td")
    # a replaced reference fools the kernel's checker, not the grader's
    assert status(graded_class, "replaces-reference", "ch02-ex-td") == "failed"
    assert EXPECTED_FEEDBACK["values"] in feedback(graded_class, "replaces-reference", "ch02-ex-td")


def test_a_renamed_function_is_an_error_that_names_both(graded_class):
    assert status(graded_class, "renamed", "ch02-ex-td") == "error"
    text = feedback(graded_class, "renamed", "ch02-ex-td")
    assert "my_td_residuals is not defined" in text and "my_td" in text
    assert status(graded_class, "renamed", "ch02-ex-gae") == "passed"


def test_an_empty_file_is_an_error_for_its_exercises(graded_class):
    for label in ("ch02-ex-td", "ch02-ex-gae"):
        assert status(graded_class, "empty", label) == "error"
        assert "not a readable notebook" in feedback(graded_class, "empty", label)
    assert status(graded_class, "empty-flat", "") == "error"  # no chapter in its name either


def test_exhausting_memory_kills_only_that_exercise(graded_class):
    assert status(graded_class, "memory", "ch02-ex-td") == "passed"
    assert status(graded_class, "memory", "ch02-ex-gae") == "error"
    assert "MemoryError" in feedback(graded_class, "memory", "ch02-ex-gae")


def test_a_kernel_exit_code_survives_kernels_started_and_reaped_in_other_threads():
    """multiprocessing's start() polls every other child; unguarded, a start racing a join read
    the fork server's exit code twice and left 255 (3 of 400 here; once in CI, as the
    kills-kernel student's 'exited with code 255'). Started and reaped as _run_kernel does."""
    from concurrent.futures import ThreadPoolExecutor
    from multiprocessing.connection import wait

    def exit_code(code: int) -> int:
        process = grader._fork_server().Process(target=os._exit, args=(code,))
        grader._start(process)
        wait([process.sentinel])  # the kernel has exited, as when _run_kernel reads EOF
        grader._kill(process)
        return process.exitcode

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(exit_code, [3, 4] * 200))
    assert codes == [3, 4] * 200


def test_a_dead_kernel_and_an_import_error_are_errors_of_their_exercise(graded_class):
    assert status(graded_class, "kills-kernel", "ch02-ex-td") == "error"
    assert "exited with code 3" in feedback(graded_class, "kills-kernel", "ch02-ex-td")
    assert status(graded_class, "raises-at-import", "ch02-ex-td") == "error"
    assert "ModuleNotFoundError" in feedback(graded_class, "raises-at-import", "ch02-ex-td")
    for student in ("kills-kernel", "raises-at-import"):
        assert status(graded_class, student, "ch02-ex-gae") == "passed"


def test_deleting_the_working_directory_harms_nobody(graded_class):
    # its own functions are graded (the kernel's record travels on a pipe, not a file) ...
    assert status(graded_class, "deletes-files", "ch02-ex-td") == "passed"
    assert status(graded_class, "deletes-files", "ch02-ex-gae") == "passed"
    # ... and the fixture checked that no instructor file changed and nothing was left behind


def test_manual_exercises_are_listed_without_points(graded_class):
    _, rows, _ = graded_class
    manual = [r for r in rows if r["student"] == "perfect" and r["status"] == "manual"]
    assert {r["exercise"] for r in manual} == {
        "ch02-ex-lambda-one", "ch02-ex-bias", "ch02-ex-gamma", "ch02-ex-timelimit",
        "ch04-ex-six-cases", "ch04-ex-klpen-grad", "ch04-ex-epsilon", "ch04-ex-normalize"}
    assert all(r["points"] == "" for r in manual)


def test_csv_and_summary_table(graded_class):
    _, rows, printed = graded_class
    assert list(rows[0]) == grader.FIELDS
    assert len({r["student"] for r in rows}) == 23
    header, *lines = printed.splitlines()
    assert header.split()[:4] == ["student", "ch02-ex-td", "ch02-ex-gae", "ch04-ex-implement"]
    perfect = next(line for line in lines if line.startswith("perfect "))
    assert perfect.split()[1:] == ["✓", "✓", "✓", "✓", "5/5"]
    untouched = next(line for line in lines if line.startswith("untouched "))
    assert untouched.split()[1:] == ["–", "–", "·", "·", "0/5"]
    assert printed.rstrip().splitlines()[-1].startswith("Graded 23 students in")


# ----------------------------------------------------------------------------- without kernels
def replayed(checker, fn):
    """(status, first line) of ``checker`` run on a replay of ``fn``'s recorded calls."""
    recorder = Recorder(fn)
    try:
        with redirect_stdout(io.StringIO()):
            checker(recorder)
    except AssertionError:
        pass
    buffer = io.BytesIO()
    torch.save(recorder.calls, buffer)  # through the same serialisation as a kernel's record
    calls = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    return direct(checker, Replay("fn", calls))


def direct(checker, fn):
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            checker(fn)
    except AssertionError as err:
        return "failed", grader._summary(str(err))
    return "passed", printed.getvalue().strip()


def _surrogate(logp, logp_old, adv, clip_eps):
    return checks._obj.clipped_surrogate(logp, logp_old, adv, clip_eps)


REPLAY_CASES = {
    "gae right": (checks.check_gae, advantages.gae),
    "gae None": (checks.check_gae, lambda *a: None),
    "gae list": (checks.check_gae, lambda *a: advantages.gae(*a).tolist()),
    "gae raises": (checks.check_gae, lambda *a: 1 / 0),
    "gae not implemented": (checks.check_gae, lambda *a: (_ for _ in ()).throw(NotImplementedError)),
    "surrogate right": (checks.check_clipped_surrogate, _surrogate),
    "surrogate .item()": (checks.check_clipped_surrogate, lambda *a: _surrogate(*a).item()),
    "surrogate wrong gradient": (checks.check_clipped_surrogate,
                                 lambda lp, *a: _surrogate(lp, *a).detach() + (lp - lp.detach()).sum()),
    "surrogate NaN": (checks.check_clipped_surrogate, lambda lp, *a: (lp * float("nan")).sum()),
    "explained variance numpy scalar": (checks.check_explained_variance,
                                        lambda v, r: np.float32(checks._obj.explained_variance(v, r))),
    "explained variance constant": (checks.check_explained_variance, lambda v, r: np.float64(0.5)),
    "conjugate gradient right": (checks.check_conjugate_gradient, checks._dense_solve),
    "kl rewards one output": (checks.check_kl_penalized_rewards,
                              lambda *a: (checks._kl_penalized_rewards(*a)[0],)),
    "whiten identity": (checks.check_whiten, lambda x, mask=None: x),
}


@pytest.mark.parametrize("case", REPLAY_CASES)
def test_replay_gives_the_checkers_own_verdict(case):
    """The grader's verdict on recorded answers equals the checker's verdict on the function."""
    checker, fn = REPLAY_CASES[case]
    assert replayed(checker, fn) == direct(checker, fn)


def test_replay_refuses_calls_that_were_not_recorded():
    recorder = Recorder(advantages.gae)
    with redirect_stdout(io.StringIO()):
        checks.check_gae(recorder, n_cases=3)
    with pytest.raises(ReplayMismatch, match="needs more"):
        checks.check_gae(Replay("my_gae", recorder.calls), n_cases=4)
    with pytest.raises(ReplayMismatch, match="other inputs"):  # the kernel's cases were changed
        checks.check_gae(Replay("my_gae", recorder.calls[1:]), n_cases=3)


def test_every_chapter_exercise_with_a_checker_is_found():
    chapters = grader.read_chapters(ROOT / "chapters")
    text = "\n".join(c.source for p in sorted((ROOT / "chapters").glob("*.ipynb"))
                     for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
    checker_lines = re.findall(r"checks\.(check_\w+)\(", text)
    found = [ex.checker for ch in chapters.values() for ex in ch.checked]
    assert found == checker_lines
    for ch in chapters.values():
        assert ch.setup.lstrip().startswith("# Setup")
        for ex in ch.checked:
            assert len(ex.stub) == 1 and "def " + ex.args[0] in ex.stub[0], (ch.name, ex.label)


def test_points_tag(tmp_path):
    nb = pristine(CH04)
    cell = next(c for c in nb.cells if ":label: ch04-ex-implement" in c.source)
    cell.metadata["tags"] = ["points-2.5"]
    write(nb, tmp_path / "a.ipynb")
    ex = {e.label: e for e in grader.read_chapter(tmp_path / "a.ipynb").exercises}
    assert ex["ch04-ex-implement"].points == 2.5 and ex["ch04-ex-epsilon"].points == 1.0
    cell.metadata["tags"] = ["points-2", "points-3"]
    write(nb, tmp_path / "b.ipynb")
    with pytest.raises(ValueError, match="more than one points tag"):
        grader.read_chapter(tmp_path / "b.ipynb")


def test_student_code_is_found_around_moved_and_deleted_cells():
    chapter = grader.read_chapters(ROOT / "chapters")[CH02]
    nb = submission(CH02, {"ch02-ex-td": TD})
    i = synthetic_class.stub_index(nb, "ch02-ex-td")
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell("helper = 1\nmp.checks.check_td_residuals(my_td_residuals)"))
    code = grader._student_code(nb, chapter)
    assert code["ch02-ex-td"] == [TD, "helper = 1"]  # the student's own checker call is removed
    del nb.cells[i - 1]  # the statement: the code just above the checker line is used
    assert grader._student_code(nb, chapter)["ch02-ex-td"][0] == TD


@pytest.mark.parametrize("kwargs, name", [({"timeout": 0}, "timeout"), ({"memory_mb": 100}, "memory_mb"),
                                          ({"jobs": 0}, "jobs"), ({"chapters_dir": "/nonexistent"}, "chapters_dir")])
def test_bad_arguments_are_named(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        grader.grade(tmp_path, **kwargs)


def test_a_missing_submissions_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="submissions_dir"):
        grader.grade(tmp_path / "missing")


def test_importing_minippo_does_not_import_the_grader():
    import subprocess

    code = "import minippo, sys; print(sorted(m for m in sys.modules if m.startswith('minippo.grade')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_a_malformed_record_is_an_error_not_a_crash():
    """A notebook can reach its kernel's pipe and send anything; the grader must not fall over."""
    chapter = grader.read_chapters(ROOT / "chapters")[CH02]
    sub = grader._Submission("mallory", Path("x.ipynb"), chapter, submission(CH02, {"ch02-ex-td": TD}))
    code = grader._student_code(sub.notebook, chapter)
    for record in ({"missing": 5}, {"calls": {"my_td_residuals": [{"args": 1}]}}, {"cell_errors": None}):
        rows = {g.exercise: g for g in grader._grades(sub, code, {"ch02-ex-td": record})}
        assert rows["ch02-ex-td"].status == "error", record
