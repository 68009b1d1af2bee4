"""Grade a class in one command: per-student, per-exercise results from submitted notebooks.

::

    python -m minippo.grade submissions/ --out grades.csv

``submissions/`` holds one folder per student (``submissions/alice/*.ipynb``, one or more
chapters each) or one notebook per student (``submissions/alice.ipynb``; a chapter's file name
in it, ``alice_02_value_functions_gae.ipynb``, is dropped from the student's name). Each
notebook is the student edition (``scripts/student_edition.py``) with the stubs filled in; its
chapter is recognised by its exercise labels, or else by its file name.

For every exercise of the chapter the grader writes one row, ``student, chapter, exercise,
status, points, max_points, feedback``, with one of five statuses:

``passed``, ``failed``
    The chapter's checker (``mp.checks.check_...``) accepted or rejected the student's function;
    the feedback is the checker's first line: its ``✓`` line, or which case differs and how.
``not attempted``
    The exercise's code is the handed-out stub, unchanged, or the function raised
    ``NotImplementedError`` on the first case.
``error``
    The exercise's cells raised before defining the function, the function is not there (renamed,
    deleted), the kernel ran out of time or memory or died, or the kernel's record does not fit
    the checker's calls (the notebook changed ``minippo.checks``).
``manual``
    Derivations and predict-then-run exercises: no checker; grade them by hand (points empty).

Points come from the chapter as the instructor has it: a ``points-N`` cell tag on the exercise's
statement cell (N an integer or decimal, default 1); a passed exercise earns them, any other
status 0.

**What runs, and where.** Grading does not execute whole notebooks (a chapter trains models for
about a minute). For each exercise with a checker the grader takes the student's code for it --
the code cells between the exercise's statement (its ``:label:``) and its checker line, any
call to a ``checks.check_*`` removed -- and runs it after the chapter's setup cell, rebuilt from
the instructor's copy of the chapter, never from the student's file. The exercises of one
notebook run in order in one namespace, as in Jupyter, so a later exercise may use an earlier
one's function (Chapter 2's ``my_gae`` calls ``my_td_residuals``); nothing else of the chapter
runs, so a function that reads the chapter's variables instead of its arguments fails with a
``NameError`` when the checker calls it. The code runs in a separate kernel process
(:mod:`minippo.grade_kernel`, a fork of a server that has imported torch once) with a time
limit per exercise, a memory limit, and an empty
temporary working directory removed afterwards; an exercise that overruns is killed with its
kernel, and a new kernel runs the exercises after it. The verdict is made in the grader's
process, by the pristine checker, against a replay of what the student's function returned in
the kernel (see :mod:`minippo.grade_kernel`), so a notebook that patches ``mp.checks``,
redefines a checker, replaces the reference or prints a fake ``✓`` gains nothing.

What this is not: a sandbox against a determined attacker. The kernel runs as the grader's
user; it cannot damage other students' grades or the instructor's files through its working
directory, but code that names an absolute path can reach whatever the user can. For an
untrusted class, run the grader as a user that owns nothing else, or in a container.
"""
from __future__ import annotations

import argparse
import ast
import csv
import functools
import io
import os
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import torch

import minippo
from minippo import checks
from minippo.grade_kernel import MAX_RECORD_BYTES, Replay, ReplayMismatch

__all__ = ["Grade", "Exercise", "Chapter", "read_chapter", "grade", "write_csv", "summary_table",
           "main", "PASSED", "FAILED", "NOT_ATTEMPTED", "ERROR", "MANUAL", "POINTS_TAG"]

PASSED, FAILED, NOT_ATTEMPTED, ERROR, MANUAL = "passed", "failed", "not attempted", "error", "manual"
#: the cell tag that gives an exercise its points, on the exercise's statement cell
POINTS_TAG = re.compile(r"points-(\d+(?:\.\d+)?)")
#: an exercise's statement and its label (the same pattern the notebook contract test uses): the
#: chapter's MyST, or the anchor before "**Exercise N**" in the reader and student editions
#: (scripts/reader_edition.py), so that a submitted student edition is recognised too
EXERCISE_LABEL = re.compile(
    r"(?:\{exercise(?:-start)?\}[^\n]*\n(?:\s*:[\w-]+:[^\n]*\n)*?\s*:label:\s*|<a id=\")"
    r"([^\s\"]+)(?:(?=\s|$)|\"></a>\*\*Exercise\b)")
CHAPTERS_DIR = Path(minippo.__file__).resolve().parent.parent / "chapters"
STARTUP_TIMEOUT_S = 120.0  # importing torch and running the setup cell, on a busy machine
_KERNEL = "minippo.grade_kernel"
#: Kernels are started and reaped from several threads. multiprocessing is not thread-safe
#: there: ``Process.start`` polls every other child (``multiprocessing.process._cleanup``), and
#: a fork-server child's exit code is read once from a pipe, so a start in one thread racing a
#: join in another leaves one of them with EOF and the code 255 (measured: 3 of 400 kernels
#: that called ``os._exit(3)``). Starts and joins take this lock.
_PROCESSES = threading.Lock()


# ============================================================================ the chapters
@dataclass(frozen=True)
class Exercise:
    """One exercise of a chapter, as the instructor's copy of the chapter defines it."""

    label: str
    points: float = 1.0
    checker: str | None = None  #: ``minippo.checks`` function the checker line calls; None: manual
    args: tuple[str, ...] = ()  #: names of the student's functions passed positionally
    kwargs: dict = field(default_factory=dict)  #: keyword -> name of a student's function
    constants: dict = field(default_factory=dict)  #: other keyword arguments of the checker line
    stub: tuple[str, ...] = ()  #: the handed-out code cells between statement and checker line

    @property
    def functions(self) -> list[str]:
        return list(dict.fromkeys([*self.args, *self.kwargs.values()]))


@dataclass(frozen=True)
class Chapter:
    name: str  #: the notebook's file name without ``.ipynb``, e.g. ``02_value_functions_gae``
    setup: str  #: the first code cell: imports, seed, threads
    exercises: tuple[Exercise, ...]

    @property
    def checked(self) -> list[Exercise]:
        return [ex for ex in self.exercises if ex.checker is not None]


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _is_solution(cell) -> bool:
    return "solution" in _tags(cell)  # the tag scripts/student_edition.py removes


def _points(cell, where: str) -> float:
    found = [float(m.group(1)) for tag in _tags(cell) if (m := POINTS_TAG.fullmatch(tag))]
    if len(found) > 1:
        raise ValueError(f"{where}: more than one points tag {found}; keep one")
    return found[0] if found else 1.0


def _parse(source: str) -> ast.Module:
    """A cell's syntax tree (IPython's ``%magics`` and ``!commands`` turned into calls first);
    raises SyntaxError."""
    from IPython.core.inputtransformer2 import TransformerManager

    with warnings.catch_warnings():  # "invalid escape sequence" in a cell's string is not ours
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        return ast.parse(TransformerManager().transform_cell(source))


def _is_checker(func: ast.expr) -> bool:
    """``checks.check_x`` or ``mp.checks.check_x`` (what a chapter's checker line calls)."""
    if not (isinstance(func, ast.Attribute) and func.attr.startswith("check")):
        return False
    owner = func.value
    return (isinstance(owner, ast.Name) and owner.id == "checks") or (
        isinstance(owner, ast.Attribute) and owner.attr == "checks")


def _checker_call(source: str, where: str) -> Exercise | None:
    """The checker line of a cell as an :class:`Exercise` without label, or None."""
    try:
        tree = _parse(source)
    except SyntaxError:
        return None
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and _is_checker(node.func)]
    if not calls:
        return None
    if len(calls) > 1:
        raise ValueError(f"{where}: one checker call per cell, found {len(calls)}")
    call = calls[0]
    if not hasattr(checks, call.func.attr):
        raise ValueError(f"{where} calls checks.{call.func.attr}, which minippo.checks does not have")
    if not all(isinstance(arg, ast.Name) for arg in call.args):
        raise ValueError(f"{where}: the checker's positional arguments must be function names")
    kwargs, constants = {}, {}
    for kw in call.keywords:
        if isinstance(kw.value, ast.Name) and kw.arg:
            kwargs[kw.arg] = kw.value.id
        elif isinstance(kw.value, ast.Constant) and kw.arg:
            constants[kw.arg] = kw.value.value
        else:
            raise ValueError(f"{where}: checker argument {kw.arg} must be a name or a constant")
    return Exercise(label="", checker=call.func.attr, args=tuple(a.id for a in call.args),
                    kwargs=kwargs, constants=constants)


def read_chapter(path: str | Path) -> Chapter:
    """The exercises of an instructor's chapter notebook (the one with the solutions).

    An exercise with a checker is a statement (``{exercise}`` with a ``:label:``), the code
    cells of its stub, and a code cell calling ``mp.checks.check_*`` before the next
    statement; solution cells are skipped. An exercise without one is graded by hand.
    """
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    cells = [cell for cell in nb.cells if not _is_solution(cell)]
    code = [cell for cell in cells if cell.cell_type == "code"]
    if not code:
        raise ValueError(f"{path.name} has no code cell, so no setup cell")
    starts = [(i, label) for i, cell in enumerate(cells) if cell.cell_type == "markdown"
              for label in EXERCISE_LABEL.findall(cell.source)]
    exercises = []
    for n, (i, label) in enumerate(starts):
        where = f"{path.name}, exercise {label}"
        if sum(1 for j, _ in starts if j == i) > 1:
            raise ValueError(f"{where}: one exercise per Markdown cell, so that its points tag "
                             "is unambiguous")
        end = starts[n + 1][0] if n + 1 < len(starts) else len(cells)
        points = _points(cells[i], where)
        for j in range(i + 1, end):
            if cells[j].cell_type != "code":
                continue
            call = _checker_call(cells[j].source, where)
            if call is not None:
                stub = tuple(c.source for c in cells[i + 1:j] if c.cell_type == "code")
                exercises.append(Exercise(label, points, call.checker, call.args, call.kwargs,
                                          call.constants, stub))
                break
        else:
            exercises.append(Exercise(label, points))
    return Chapter(path.stem, code[0].source, tuple(exercises))


def read_chapters(chapters_dir: str | Path) -> dict[str, Chapter]:
    chapters_dir = Path(chapters_dir)
    if not chapters_dir.is_dir():
        raise ValueError(f"chapters_dir must be a folder of chapter notebooks, got {chapters_dir} "
                         "(pass the repository's chapters/ folder)")
    chapters = {p.stem: read_chapter(p) for p in sorted(chapters_dir.glob("*.ipynb"))}
    if not chapters:
        raise ValueError(f"chapters_dir {chapters_dir} holds no .ipynb file")
    return chapters


# ============================================================================ the submissions
@dataclass(frozen=True)
class Grade:
    """One row of the grade book."""

    student: str
    chapter: str
    exercise: str
    status: str
    points: float | None  #: earned; None for a manual exercise
    max_points: float
    feedback: str


@dataclass
class _Submission:
    student: str
    path: Path
    chapter: Chapter | None = None
    notebook: object = None
    problem: str = ""  #: why it cannot be graded, if it cannot


def _find_submissions(submissions_dir: Path, chapters: dict[str, Chapter]) -> list[_Submission]:
    found = []
    for entry in sorted(submissions_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found += [_Submission(entry.name, p) for p in sorted(entry.rglob("*.ipynb"))
                      if not any(part.startswith(".") for part in p.relative_to(entry).parts)]
        elif entry.suffix == ".ipynb":
            name = entry.stem
            for stem in chapters:  # alice_02_value_functions_gae.ipynb is alice's
                name = name.replace(stem, "")
            found.append(_Submission(name.strip(" _-.") or entry.stem, entry))
    for sub in found:
        _identify(sub, chapters)
    return found


def _identify(sub: _Submission, chapters: dict[str, Chapter]) -> None:
    """Read the notebook and tell its chapter: by its exercise labels, else by its file name."""
    import nbformat

    try:
        sub.notebook = nbformat.read(sub.path, as_version=4)
        labels = {label for cell in sub.notebook.cells if cell.get("cell_type") == "markdown"
                  for label in EXERCISE_LABEL.findall(cell.get("source", ""))}
    except Exception as err:
        sub.problem = f"{sub.path.name} is not a readable notebook ({type(err).__name__}: {err})"
        labels = set()
    matches = {name: len(labels & {ex.label for ex in ch.exercises}) for name, ch in chapters.items()}
    best = max(matches, key=matches.get)
    if matches[best] > 0:
        sub.chapter = chapters[best]
        return
    by_name = [ch for name, ch in chapters.items() if name in sub.path.stem]
    by_number = [ch for name, ch in chapters.items()
                 if re.match(rf"{name.split('_')[0]}\b|{name.split('_')[0]}_", sub.path.stem)]
    candidates = by_name or by_number
    if len(candidates) == 1:
        sub.chapter = candidates[0]
    if not sub.problem:
        sub.problem = f"{sub.path.name} contains none of the chapters' exercises"


def _without_checker_calls(source: str) -> str:
    """A student's cell without its top-level checker lines: expressions, asserts and
    assignments that call a ``checks.check_*`` (the grader makes its own call)."""
    try:
        tree = _parse(source)
    except SyntaxError:
        return source  # the kernel reports the SyntaxError
    keep = [node for node in tree.body
            if not (isinstance(node, (ast.Expr, ast.Assert, ast.Assign, ast.AnnAssign)) and any(
                isinstance(n, ast.Call) and _is_checker(n.func) for n in ast.walk(node)))]
    if len(keep) == len(tree.body):
        return source
    return ast.unparse(ast.Module(body=keep, type_ignores=[]))


def _student_code(notebook, chapter: Chapter) -> dict[str, list[str]]:
    """For each checked exercise, the student's code cells (checker calls removed, empty
    cells dropped): the cells between its statement and its checker line. A statement cell
    the student deleted is replaced by the last Markdown cell above the checker line."""
    cells = notebook.cells
    statement = {}  # label -> index of the first Markdown cell stating it
    for i, cell in enumerate(cells):
        for label in EXERCISE_LABEL.findall(cell.source) if cell.cell_type == "markdown" else ():
            statement.setdefault(label, i)
    checker_line = re.compile(r"\bchecks\.(check\w*)\s*\(")
    code = {}
    for ex in chapter.checked:
        calls = [i for i, cell in enumerate(cells) if cell.cell_type == "code"
                 and ex.checker in checker_line.findall(cell.source)
                 and i > statement.get(ex.label, -1)]
        end = calls[0] if calls else None
        if ex.label in statement:
            start = statement[ex.label]
            if end is None:
                later = [i for i in statement.values() if i > start]
                end = min(later) if later else len(cells)
        elif end is not None:
            start = max([i for i in range(end) if cells[i].cell_type == "markdown"], default=-1)
        else:
            code[ex.label] = []
            continue
        last = end + 1 if calls else end  # the checker line's cell may hold the student's code too
        sources = [_without_checker_calls(cells[i].source) for i in range(start + 1, last)
                   if cells[i].cell_type == "code"]
        code[ex.label] = [s for s in sources if s.strip()]
    return code


def _normalised(sources) -> list[str]:
    return [line.rstrip() for source in sources for line in source.strip().splitlines()
            if line.strip()]


# ============================================================================ running the kernels
@dataclass(frozen=True)
class _Limits:
    timeout: float
    memory_bytes: int
    startup_timeout: float
    file_bytes: int = 64 * 2**20


def _load(payload: bytes) -> dict:
    """A kernel's record, read without letting it build arbitrary objects."""
    record = torch.load(io.BytesIO(payload), weights_only=True)
    if not isinstance(record, dict):
        raise ValueError("not a record")
    return record


def _exit_reason(returncode: int | None, timeout: float | None) -> str:
    if timeout is not None:
        return f"timed out: still running after {timeout:g} s (an endless loop?)"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the kernel died ({name}; out of memory or a crash?)"
    return f"the kernel exited with code {returncode} (the notebook called exit or os._exit?)"


def _kernel_environment() -> dict[str, str]:
    """The variables a kernel inherits: what Python, torch and matplotlib need, and the
    numerics settings (``MKL_*``, ``OMP_*``, ``ATEN_*``, ``MINIPPO_*``), not the instructor's
    tokens and passwords."""
    import matplotlib

    keep = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items()
           if k in keep or k.startswith(("MKL_", "OMP_", "ATEN_", "MINIPPO_"))}
    # matplotlib's font cache, so that a kernel does not rebuild it
    return {**env, "MPLBACKEND": "Agg", "MPLCONFIGDIR": matplotlib.get_configdir()}


@functools.lru_cache(maxsize=1)
def _fork_server():
    """A multiprocessing context whose fork server has imported torch, minippo and IPython
    once: a kernel is a fork of it, a fraction of a second instead of the ~2.5 CPU seconds
    of a fresh interpreter's imports. The server only imports, so forking it is safe."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([_KERNEL, "IPython.core.interactiveshell", "matplotlib.pyplot"])
    return context


def _receive(conn, deadline: float):
    """The kernel's next message ``(kind, index, payload)``; None at the deadline; ``("eof", ...)``
    when the kernel is gone; ``("garbled", ...)`` for a message that is not one of ours."""
    if not conn.poll(max(0.0, deadline - time.monotonic())):
        return None
    try:
        message = conn.recv_bytes(MAX_RECORD_BYTES)
    except EOFError:
        return "eof", -1, b""
    except OSError:  # longer than MAX_RECORD_BYTES
        return "garbled", -1, b""
    header, _, payload = message.partition(b"\n")
    try:
        kind, index = header.decode("ascii").split(" ")
        return kind, int(index), payload
    except ValueError:
        return "garbled", -1, b""


def _start(process) -> None:
    with _PROCESSES:
        process.start()


def _kill(process) -> None:
    """Kill a kernel and everything it started (its process group), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # it had not called setsid yet
        process.kill()
    with _PROCESSES:
        process.join()


def _run_kernel(setup: str, exercises: list[dict], limits: _Limits) -> dict[int, dict]:
    """Start one kernel for ``exercises``; return a record per exercise it finished, plus a
    ``kernel_error`` record for the one it was running when it was killed or died."""
    from minippo import grade_kernel

    records: dict[int, dict] = {}
    running, timed_out, started = None, None, False
    with tempfile.TemporaryDirectory(prefix="minippo-grade-", ignore_cleanup_errors=True) as tmp:
        work, stderr = Path(tmp) / "work", Path(tmp) / "stderr.txt"
        work.mkdir()
        cpu = int(limits.startup_timeout + limits.timeout * len(exercises)) + 10
        spec = {"setup": setup, "exercises": exercises, "cpu_seconds": cpu,
                "memory_bytes": limits.memory_bytes, "file_bytes": limits.file_bytes}
        env = {**_kernel_environment(), "TMPDIR": str(work), "IPYTHONDIR": str(work / ".ipython")}
        context = _fork_server()
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=grade_kernel.run, daemon=True,
                                  args=(spec, writer, str(work), env, str(stderr)))
        _start(process)
        writer.close()  # the kernel holds the only writer: its death ends the pipe
        deadline = time.monotonic() + limits.startup_timeout
        try:
            while len(records) < len(exercises):
                message = _receive(reader, deadline)
                if message is None:
                    timed_out = limits.timeout if started else limits.startup_timeout
                    break
                kind, index, payload = message
                if kind in ("eof", "garbled"):
                    if kind == "garbled" and running is not None:
                        records[running] = {"kernel_error": "the kernel's report was garbled "
                                                            "(did the notebook write to it?)"}
                    break
                if kind == "setup-error":
                    raise RuntimeError(f"the chapter's setup cell failed in the grading kernel: "
                                       f"{_load(payload)}")
                started = True
                deadline = time.monotonic() + limits.timeout
                if kind == "start":
                    running = index
                elif kind == "done" and index == running:
                    try:
                        records[index] = _load(payload)
                    except Exception as err:
                        records[index] = {"kernel_error": f"the kernel's record could not be read ({err})"}
                    running = None
        finally:
            _kill(process)
            reader.close()
        if not started and timed_out is None:
            err = stderr.read_bytes()[-3000:].decode(errors="replace") if stderr.exists() else ""
            raise RuntimeError(f"the grading kernel failed to start ({_exit_reason(process.exitcode, None)}"
                               f"; is memory_mb large enough?):\n{err}")
    if running is not None and running not in records:
        records[running] = {"kernel_error": _exit_reason(process.exitcode, timed_out)}
    elif not started and timed_out is not None:
        for ex in exercises:
            records.setdefault(ex["index"], {"kernel_error": f"the grading kernel did not start "
                                                             f"within {timed_out:g} s"})
    return records


def _run_notebook(sub: _Submission, limits: _Limits) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """Run a submission's exercises, restarting the kernel after one that is killed or dies.

    Returns the student's code per exercise label and the kernel's record per exercise label.
    """
    chapter = sub.chapter
    code = _student_code(sub.notebook, chapter)
    attempted = {ex.label: _normalised(code[ex.label]) != _normalised(ex.stub) for ex in chapter.checked}
    records: dict[int, dict] = {}
    failed: set[int] = set()  # exercises whose kernel was killed or died: not run again
    while True:
        todo = [k for k, ex in enumerate(chapter.checked) if attempted[ex.label] and k not in records]
        if not todo:
            break
        jobs = [{"index": k, "cells": code[ex.label], "run": k not in failed,
                 "record": k in todo, "checker": ex.checker, "args": list(ex.args),
                 "kwargs": ex.kwargs, "constants": ex.constants, "functions": ex.functions}
                for k, ex in enumerate(chapter.checked[:todo[-1] + 1])]
        finished = {k: r for k, r in _run_kernel(chapter.setup, jobs, limits).items() if k in todo}
        if not finished:  # the kernel stopped between two exercises: retire the next one anyway
            finished = {todo[0]: {"kernel_error": "the kernel stopped before this exercise ran"}}
        for k, record in finished.items():
            records[k] = record
            if "kernel_error" in record:
                failed.add(k)
    return code, {chapter.checked[k].label: record for k, record in records.items()}


# ============================================================================ the verdict
def _summary(message: str) -> str:
    """A checker's message up to its ``inputs:`` block, on one line."""
    lines = []
    for line in message.strip().splitlines():
        if line.strip() == "inputs:":
            break
        lines.append(line.strip())
    return " ".join(lines)


def _verdict(ex: Exercise, code: list[str], record: dict | None) -> tuple[str, str]:
    """``(status, feedback)`` of one checked exercise, from the kernel's record."""
    if _normalised(code) == _normalised(ex.stub):
        return NOT_ATTEMPTED, "the exercise's code is the handed-out stub, unchanged"
    if record is None or "kernel_error" in record:
        return ERROR, (record or {}).get("kernel_error", "the kernel sent no record")
    errors = [f"{e.get('type')}: {e.get('message')}" for e in record.get("cell_errors", [])]
    if record.get("missing"):
        name = record["missing"][0]
        if errors:
            return ERROR, f"a cell raised {errors[0]} (so {name} was never defined)"
        others = [f for f in record.get("new_functions", []) if f not in ex.functions]
        hint = f"; the exercise's cells define {', '.join(others)}" if others else ""
        return ERROR, (f"{name} is not defined after the exercise's cells ran (the checker calls "
                       f"it by that name{hint})")
    replays = {name: Replay(name, record.get("calls", {}).get(name, [])) for name in ex.functions}
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            getattr(checks, ex.checker)(*[replays[n] for n in ex.args],
                                        **{k: replays[n] for k, n in ex.kwargs.items()}, **ex.constants)
    except ReplayMismatch as err:
        return ERROR, str(err)
    except AssertionError as err:
        if any(replay.not_implemented for replay in replays.values()):
            return NOT_ATTEMPTED, _summary(str(err))
        note = f" (a cell also raised {errors[0]})" if errors else ""
        return FAILED, _summary(str(err)) + note
    note = f" (a cell also raised {errors[0]})" if errors else ""
    return PASSED, "; ".join(printed.getvalue().strip().splitlines()) + note


def _grades(sub: _Submission, code: dict, records: dict) -> list[Grade]:
    rows = []
    for ex in sub.chapter.exercises:
        if ex.checker is None:
            status, feedback = MANUAL, "no checker: grade by hand"
        elif sub.problem:
            status, feedback = ERROR, sub.problem
        else:
            try:
                status, feedback = _verdict(ex, code[ex.label], records.get(ex.label))
            except Exception as err:  # a malformed record (or a grader bug) must not stop the class
                status = ERROR
                feedback = f"the grader could not check this answer ({type(err).__name__}: {err})"
        points = None if status == MANUAL else (ex.points if status == PASSED else 0.0)
        rows.append(Grade(sub.student, sub.chapter.name, ex.label, status, points, ex.points,
                          " ".join(feedback.split())[:500]))
    return rows


# ============================================================================ the class
def _check_number(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")


def grade(submissions_dir: str | Path, chapters_dir: str | Path | None = None, *,
          timeout: float = 30.0, memory_mb: int = 2048, jobs: int | None = None,
          startup_timeout: float = STARTUP_TIMEOUT_S, progress: bool = True) -> list[Grade]:
    """Grade every notebook under ``submissions_dir``; return one :class:`Grade` per student,
    chapter and exercise, sorted by student, then in the order of the book.

    Args:
        submissions_dir: one folder per student, or one notebook per student (see the module
            docstring).
        chapters_dir: the instructor's chapter notebooks, with solutions (default: the
            repository's ``chapters/``); setup cells, checker lines, stubs and points come
            from here.
        timeout: seconds an exercise's cells and its checker may run in the kernel.
        memory_mb: address space of a kernel (importing torch takes about 700 MB of it).
        jobs: kernels running at once (default: the number of CPUs).
        startup_timeout: seconds a kernel may take to import and run the setup cell.
        progress: show a progress bar (on stderr).
    """
    from tqdm.auto import tqdm

    submissions_dir = Path(submissions_dir)
    if not submissions_dir.is_dir():
        raise ValueError(f"submissions_dir must be a folder, got {submissions_dir}")
    _check_number("timeout", timeout, 0.1, 3600)
    _check_number("startup_timeout", startup_timeout, 1, 3600)
    if not isinstance(memory_mb, int) or not 1024 <= memory_mb <= 1 << 20:
        raise ValueError(f"memory_mb must be an int of at least 1024 (torch alone needs about "
                         f"700 MB of address space), got {memory_mb!r}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    chapters = read_chapters(CHAPTERS_DIR if chapters_dir is None else chapters_dir)
    limits = _Limits(float(timeout), memory_mb * 2**20, float(startup_timeout))

    submissions = _find_submissions(submissions_dir, chapters)
    rows, seen = [], {}
    runnable = []
    for sub in submissions:
        if sub.chapter is None:
            rows.append(Grade(sub.student, "", "", ERROR, 0.0, 0.0, sub.problem))
        elif (sub.student, sub.chapter.name) in seen:
            rows.append(Grade(sub.student, sub.chapter.name, "", ERROR, 0.0, 0.0,
                              f"{sub.path.name}: a second notebook of this chapter (graded: "
                              f"{seen[sub.student, sub.chapter.name]})"))
        else:
            seen[sub.student, sub.chapter.name] = sub.path.name
            runnable.append(sub)
    bar = tqdm(total=len(runnable), desc="grading", unit="notebook", disable=not progress,
               file=sys.stderr)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_run_notebook, sub, limits): sub for sub in runnable if not sub.problem}
        for sub in runnable:
            if sub.problem:
                rows += _grades(sub, {}, {})
                bar.update()
        for future in as_completed(futures):
            sub = futures[future]
            code, records = future.result()
            rows += _grades(sub, code, records)  # verdicts in this thread: they capture stdout
            bar.update()
    bar.close()
    order = {name: k for k, name in enumerate(chapters)}
    position = {(ch.name, ex.label): k for ch in chapters.values() for k, ex in enumerate(ch.exercises)}
    return sorted(rows, key=lambda g: (g.student, order.get(g.chapter, -1),
                                       position.get((g.chapter, g.exercise), -1)))


# ============================================================================ reports
FIELDS = ["student", "chapter", "exercise", "status", "points", "max_points", "feedback"]
SYMBOLS = {PASSED: "✓", FAILED: "✗", NOT_ATTEMPTED: "–", ERROR: "E"}


def _number(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def write_csv(grades: list[Grade], path: str | Path) -> None:
    """The long grade book: one row per student, chapter and exercise."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        for g in grades:
            writer.writerow([g.student, g.chapter, g.exercise, g.status, _number(g.points),
                             _number(g.max_points), g.feedback])


def summary_table(grades: list[Grade]) -> str:
    """Students x checked exercises (✓ passed, ✗ failed, – not attempted, E error), with each
    student's points out of the points of every checked exercise in the table."""
    exercises = list(dict.fromkeys(g.exercise for g in grades if g.status != MANUAL and g.exercise))
    worth = {g.exercise: g.max_points for g in grades if g.exercise in exercises}
    students = list(dict.fromkeys(g.student for g in grades))
    cell = {(g.student, g.exercise): SYMBOLS.get(g.status, "?") for g in grades}
    earned = {s: sum(g.points or 0.0 for g in grades if g.student == s and g.status != MANUAL)
              for s in students}
    total = sum(worth.values())
    name_w = max([len("student"), *map(len, students)])
    header = ["student".ljust(name_w), *exercises, "total"]
    lines = ["  ".join(header)]
    for s in students:
        marks = [cell.get((s, ex), "·").center(len(ex)) for ex in exercises]
        lines.append("  ".join([s.ljust(name_w), *marks, f"{earned[s]:g}/{total:g}"]))
    manual = sorted({g.exercise for g in grades if g.status == MANUAL})
    lines.append(f"✓ passed  ✗ failed  – not attempted  E error  · not submitted; "
                 f"{len(manual)} exercise(s) to grade by hand (status 'manual' in the CSV)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minippo.grade",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, help="folder of submitted notebooks")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"),
                        help="the CSV to write (default: grades.csv)")
    parser.add_argument("--chapters", type=Path, default=None,
                        help="the instructor's chapter notebooks (default: the repository's chapters/)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds per exercise in a kernel (default: 30)")
    parser.add_argument("--memory-mb", type=int, default=2048,
                        help="address space of a kernel in MB (default: 2048)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="kernels at once (default: the number of CPUs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    grades = grade(args.submissions, args.chapters, timeout=args.timeout,
                   memory_mb=args.memory_mb, jobs=args.jobs, progress=not args.quiet)
    write_csv(grades, args.out)
    print(summary_table(grades))
    students = len({g.student for g in grades})
    print(f"Graded {students} students in {time.perf_counter() - start:.0f} s; "
          f"{len(grades)} rows written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
