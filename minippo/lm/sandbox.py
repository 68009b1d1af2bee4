"""Run model-written Python in a fresh, locked-down process per candidate program.

Chapter 8 (``chapters/08_capstone_rlhf_code.ipynb``) rewards a tiny GPT for writing function
bodies that pass unit tests, so the tests have to *run* code nobody has read, and the policy is
an optimiser: whatever this module lets through that raises the reward, RL will find. The book's
reliability contract says what must hold: model-written code never runs in the reader's Python
process; it runs in a separate, resource- and time-limited process with the least privilege the
system allows, one process per candidate, and never sees the expected answers; hostile programs,
including programs written against this sandbox, score zero, cannot touch the caller or each
other, and leave nothing behind. This module is that promise::

    cases = [((1,), 4), ((0,), 3), ((-3,), 0)]           # (arguments, expected answer)
    results = run_cases(["def add3(x):\n    return x + 3"], ["add3"], [cases])
    results[0].status, results[0].pass_rate               # ('ok', 1.0)

Unit tests are data. This process parses and compiles each program (which runs none of it),
the sandbox calls the candidate's function on each case's *arguments* and sends back what it
returned, as plain data, and this process compares that with the expected answer, which never
leaves it.

What is guaranteed, and by which layer
--------------------------------------
1. **The answers stay here.** A candidate's message can at best *claim* outputs, and claims are
   checked against answers the sandbox never saw. Only plain data comes back: None, bool, int,
   float, str, and lists, tuples and dicts of them (32 levels deep at most, 1 MiB per candidate),
   encoded in a strict JSON form by exact type. An object with its own ``__eq__`` is not plain
   data: that case fails ("returned Any"). The comparison is Python's ``==`` on plain data, here,
   so honest answers are judged as ``assert f(x) == y`` judged them (``0 / 3 == 0`` passes, as
   does ``1 == True``).
2. **Nothing a candidate writes can hurt the caller.** A message that does not decode (not JSON,
   the wrong shape, the wrong number of outputs, too long, too deep) scores zero with its own
   status, ``"malformed"``; nothing a candidate does makes :func:`run_cases` raise.
3. **One fresh process per candidate.** A *zygote* (:mod:`minippo.lm.sandbox_zygote`), a clean
   interpreter with the allowed modules already imported, forks one child per candidate; the
   zygote itself never runs candidate code. Whatever a candidate changes (a module, a class such
   as ``collections.Counter``, its memory) ends with its process.
4. **Deadlines on this process's clock.** A candidate's clock starts when the zygote reports it
   forked, and this process has it killed ``timeout_s + kill_grace_s`` wall-clock seconds later,
   whatever it wrote meanwhile. Inside, a CPU timer ends an endless loop after ``timeout_s`` CPU
   seconds (50 ms by default); the wall-clock deadline catches the rest (a program stuck in one
   C call, one that switched the timer off).
5. **Everything a candidate starts dies with it.** Each candidate is the first process (init) of
   a PID namespace of its own: when it dies, the kernel kills everything in that namespace, and
   it is reaped only after that. The zygote is itself init of a PID namespace around all of
   them, so a zygote that dies takes every candidate with it. Without PID namespaces: the
   candidate's process group, a parent-death signal, and ``RLIMIT_NPROC = 0`` (no new
   processes at all; as ``nobody`` not even ``execve``).
6. **Least privilege, in layers** (:func:`layers` returns the active ones; a one-line notice
   says once per process which are active and which are not, and why):

   * **static guard**, in this process, before anything runs: :func:`static_guard` refuses
     imports outside :data:`ALLOWED_IMPORTS`, dunder names, private attributes, frame
     internals and the builtins that open, evaluate or exit. It zeroes obviously hostile
     programs cheaply; it is *not* a boundary (library functions that look attributes up by
     string, such as ``functools.update_wrapper``, walk past it).
   * **restricted builtins**: an allow-list (:data:`SAFE_BUILTINS`) and an ``import`` of copies
     of the allowed modules. Not a boundary either, for the same reason.
   * **resource limits** per candidate: address space ``memory_mb``, CPU seconds, file size 0,
     16 open files, no new processes, no core dumps.
   * **unprivileged uid**: when the caller is root (CI, Colab), the candidate drops to
     ``nobody`` before it runs anything, so ``RLIMIT_NPROC`` binds and it can neither signal
     the caller nor write the caller's files; **no capabilities** (checked in
     ``/proc/self/status``), **no new privileges** (``PR_SET_NO_NEW_PRIVS``).
   * a **system-call filter** (seccomp, x86_64 Linux; needs no privileges, so it holds where
     namespaces are refused too): no signals to other processes, no new processes, threads or
     programs, no file or directory changes and no opening for writing, no sockets, no System V
     IPC or message queues, no namespaces or mounts, no tracing; everything else (memory,
     reading, the message) is let through, each refusal an ``EPERM``.
   * **no file access** (Landlock, Linux 5.13+; needs no privileges either): the candidate may
     open no file or directory at all, for reading, writing or executing (what was open before,
     the message pipe, stays usable), may not trace or read the memory of any process outside
     its domain (the caller's included), and, as the kernel's Landlock allows, may not use TCP
     or signal a process outside it. A program that needs a module the zygote has not loaded
     (a rare text codec, say) therefore fails with an error; the allowed modules are loaded.
   * namespaces: a **user namespace** (when the caller is not root), a **network namespace**
     (no network at all), a **read-only filesystem** (a mount namespace in which every mount is
     read-only), an **IPC namespace** around all candidates and an **IPC namespace per
     candidate** (shared memory and message queues it makes are seen by no other candidate and
     destroyed when it ends), and the **PID namespaces** above.
7. **Nothing left behind.** No file is created anywhere (the zygote works in ``/``, its error
   output goes to an unnamed temporary file), no shared memory outlives its candidate (the
   IPC namespace and the filter), and every candidate's process is reaped before
   :func:`run_cases` returns. The zygote itself is kept for the next call (starting it costs
   an interpreter, the imports and the namespaces; keeping it costs a sleeping process that
   holds no candidate's state); :func:`stop` ends it, and it ends with this process.

A program that ran with the same arguments before is not run again: :func:`run_cases` remembers
the last few thousand ordinary outcomes (``ok``, ``error``). Candidates see no clock, no
randomness and no files in their builtins, so a program returns what it returned before; what
they can see that does vary (``id``, the hash of a ``str``) varies between zygotes, not between
the runs of one. A policy repeats itself: in a 40-iteration RLHF-PPO run of chapter 8 about 45
distinct programs per batch are scored, on average 8 of them new.

What it does not guarantee
--------------------------
It is not a virtual machine. Every layer above is a Linux kernel feature, and a kernel bug is a
way out; for code that is truly untrusted (an adversary's, not a small model's samples), run
it in a VM or a system-call sandbox such as gVisor. A candidate can still use CPU and memory up
to its limits, and see what the kernel shows every process (its own ids, the time, the
kernel's version). And a layer the system does not offer is missing, not replaced: without
Landlock (Linux before 5.13, or a kernel built without it) a candidate can read what its uid
may read (as ``nobody``: world-readable files; without the uid drop: the caller's files, and,
where no user namespace separates them, the caller's memory, expected answers included); in a
container that forbids namespaces, or as a non-root user without user namespaces, a program
that gets past the two Python-level layers runs with the caller's uid, held back by the
system-call filter, Landlock and the limits; on macOS, or on Linux off x86_64 without
namespaces and Landlock, only the limits hold it back (the notice says which layers are
there). Hash randomisation differs per zygote, so a body whose answer depends on
the iteration order of a set of strings may pass in one process and fail in the next.

Cost: the zygote starts once (tens of milliseconds); then each new program costs a fork, about
a millisecond of CPU in all, a few at a time. ``benchmarks/sandbox_speed.py`` measures a batch
and an RLHF-PPO iteration; the figures are in the README. POSIX only: Linux gets every layer,
macOS the process per candidate, the limits it enforces and the uid drop.
"""
from __future__ import annotations

import ast
import atexit
import json
import marshal
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from types import CodeType
from typing import Any, Sequence

from minippo.lm import sandbox_zygote as zygote

__all__ = [
    "Result",
    "run_cases",
    "layers",
    "stop",
    "static_guard",
    "parse_or_none",
    "OK",
    "ERROR",
    "REJECTED",
    "TIMEOUT",
    "MEMORY",
    "EXIT",
    "CRASHED",
    "MALFORMED",
    "VIOLATIONS",
    "ALLOWED_IMPORTS",
    "SAFE_BUILTINS",
    "MAX_MESSAGE_BYTES",
]

# Result statuses. ``OK`` and ``ERROR`` are ordinary outcomes; the others are VIOLATIONS: the
# sandbox stopped or refused the program, and every one of its cases counts as failed.
OK = "ok"  #: the program ran; each case passed or failed on its own
ERROR = "error"  #: the program did not compile, raised while being defined, or lacks the function
REJECTED = "rejected"  #: the static guard refused it; it never ran
TIMEOUT = "timeout"  #: it used ``timeout_s`` of CPU time, or was killed at its wall-clock deadline
MEMORY = "memory"  #: it ran out of memory or stack (``MemoryError``, ``RecursionError``)
EXIT = "exit"  #: it raised SystemExit, KeyboardInterrupt or another non-Exception to stop the run
CRASHED = "crashed"  #: its process died of a signal or exited on its own, without a message
MALFORMED = "malformed"  #: its message could not be read: no message, too long, not the format
VIOLATIONS = frozenset({REJECTED, TIMEOUT, MEMORY, EXIT, CRASHED, MALFORMED})

#: Modules a candidate may import; each import returns a copy of the public names.
ALLOWED_IMPORTS = ("math", "cmath", "itertools", "functools", "collections", "heapq", "bisect")

#: Builtins a candidate may use (plus every builtin exception class and a whitelisting
#: ``__import__``); ``print`` writes to /dev/null. Deliberately missing: open, exec, eval,
#: compile, input, exit, quit, help, breakpoint, getattr, setattr, delattr, hasattr, vars,
#: globals, locals, dir, type, memoryview.
SAFE_BUILTINS = (
    "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr",
    "classmethod", "complex", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hash", "hex", "id", "int", "isinstance", "issubclass", "iter", "len", "list",
    "map", "max", "min", "next", "object", "oct", "ord", "pow", "print", "property", "range",
    "repr", "reversed", "round", "set", "slice", "sorted", "staticmethod", "str", "sum", "super",
    "tuple", "zip", "True", "False", "None", "Ellipsis", "NotImplemented", "__build_class__",
)

#: The most a candidate's message may take; a longer one is ``"malformed"``.
MAX_MESSAGE_BYTES = 1 << 20

# Builtins that open, evaluate, introspect or exit: missing from SAFE_BUILTINS, and a program
# that names one is refused outright rather than failing with a NameError.
_FORBIDDEN_NAMES = frozenset({
    "open", "exec", "eval", "compile", "input", "exit", "quit", "breakpoint", "help",
    "getattr", "setattr", "delattr", "hasattr", "vars", "globals", "locals", "dir",
})

# Attributes without a leading underscore that still lead to frames, globals or code objects.
_FORBIDDEN_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "cr_origin",
    "ag_frame", "ag_code", "ag_await", "f_back", "f_builtins", "f_code", "f_globals",
    "f_locals", "f_trace", "tb_frame", "tb_next", "co_code", "co_consts", "func_globals",
})

_MAX_PROGRAM_CHARS = 20_000  # a generated body is a few hundred characters
_STARTUP_TIMEOUT_S = 15.0  # interpreter start on a loaded 2-core machine, with room to spare
_EXIT_GRACE_S = 0.2  # how long a zygote that is done may take to exit before its group is killed
_PLAIN = (type(None), bool, int, float, str, list, tuple, dict)  # what may cross the boundary
_CLAIMED = {"ok": OK, "error": ERROR, "memory": MEMORY, "exit": EXIT}  # message status -> ours
_CALLER_LAYERS = {"static guard": "", "wall-clock deadline": ""}  # layers of this process
# Zygote layers not to set up: for the tests, which switch one off to show that the next holds.
_DISABLED_LAYERS: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    """What happened to one program of a batch.

    ``status`` is one of :data:`OK`, :data:`ERROR`, :data:`REJECTED`, :data:`TIMEOUT`,
    :data:`MEMORY`, :data:`EXIT`, :data:`CRASHED`, :data:`MALFORMED`; ``passed`` has one flag
    per case, all ``False`` unless the status is ``OK``; ``detail`` says why, in a few words
    (what the first failing case did, the refused name, how the process died).
    """

    status: str
    passed: tuple[bool, ...]
    detail: str = ""

    @property
    def pass_rate(self) -> float:
        """Fraction of cases passed (0.0 for a program without cases)."""
        return sum(self.passed) / len(self.passed) if self.passed else 0.0

    @property
    def violation(self) -> bool:
        """True if the sandbox refused or stopped the program (see :data:`VIOLATIONS`)."""
        return self.status in VIOLATIONS


def static_guard(program: str) -> str | None:
    """Why the static guard refuses ``program``, or ``None`` if it may run (the first layer).

    Only parses (:func:`ast.parse` never executes). Refuses identifiers that start with ``__``
    (names, definitions, arguments, imports), attributes and imported names that start with
    ``_``, frame/generator/code internals, imports outside :data:`ALLOWED_IMPORTS`, the
    builtins in ``_FORBIDDEN_NAMES``, and programs over 20,000 characters. A program that
    does not parse is not refused here: it comes back from :func:`run_cases` as ``"error"``.
    """
    status, detail, _ = _screen(program, ALLOWED_IMPORTS)
    return detail if status == REJECTED else None


def _refuse(tree: ast.Module, allowed_imports: tuple[str, ...]) -> str | None:
    """The static guard's check of a parsed program: why it is refused, or None."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):  # strings are data; only identifiers are checked
            continue
        if isinstance(node, ast.Name) and node.id in _FORBIDDEN_NAMES:
            return f"name {node.id!r} is not allowed"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                "." * node.level + (node.module or "")]
            refused = [m for m in modules if m not in allowed_imports]
            if refused:
                return f"import of {refused[0]!r} is not allowed"
        # Attribute-like identifiers (x.attr, imported names, ``case C(attr=...)``) may not
        # start with "_"; every other identifier may not start with "__".
        attribute_like = isinstance(node, (ast.alias, ast.ImportFrom))
        for field, value in ast.iter_fields(node):
            if field == "type_comment":
                continue
            for name in value if isinstance(value, list) else [value]:
                if not isinstance(name, str):
                    continue
                private = "_" if attribute_like or field in ("attr", "kwd_attrs") else "__"
                if any(part.startswith(private) for part in name.split(".")):
                    return f"name {name!r} is not allowed"
                if field in ("attr", "kwd_attrs") and name in _FORBIDDEN_ATTRIBUTES:
                    return f"attribute {name!r} is not allowed"
    return None


def parse_or_none(source: str) -> ast.Module | None:
    """:func:`ast.parse`, but ``None`` for source that does not parse, and no SyntaxWarnings.

    Model output such as ``x is 1`` would otherwise print warnings into the reader's notebook.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def run_cases(
    programs: Sequence[str],
    function_names: Sequence[str],
    cases: Sequence[Sequence[tuple[tuple, Any]]],
    *,
    timeout_s: float = 0.05,
    memory_mb: int = 256,
    kill_grace_s: float = 0.5,
    batch_timeout_s: float = 30.0,
) -> list[Result]:
    """Run each program in its own sandboxed process and check its function on its cases.

    ``cases[i]`` is a list of ``(args, expected)`` pairs for ``programs[i]``: the sandbox calls
    ``function_names[i](*args)`` and sends back what it returned; here it is compared with
    ``expected`` (``==``). ``args`` is a tuple (or list) of arguments and ``expected`` an
    answer, both plain data: None, bool, int, float, str, and lists, tuples and dicts of them.
    Each case is called in turn in the same process; a case that raises fails on its own; a
    program that runs out of time or memory forfeits all its cases. Returns one
    :class:`Result` per program, in order.

    Limits: ``timeout_s`` CPU seconds per program (its definition and all its cases; the
    default 50 ms is about a thousand times what a one-line function needs, and keeps a batch
    of endless loops short); ``memory_mb`` of address space per program; a program still
    running ``timeout_s + kill_grace_s`` wall-clock seconds after it started is killed; the
    whole call returns within about ``batch_timeout_s`` (what has not finished by then is
    ``"timeout"``). The module docstring lists the layers and what they guarantee.
    """
    if isinstance(programs, str) or isinstance(function_names, str):
        raise ValueError("programs and function_names must be lists (one entry per program), got a str")
    n = len(programs)
    if len(function_names) != n or len(cases) != n:
        raise ValueError(f"programs, function_names and cases must have the same length, "
                         f"got {n}, {len(function_names)} and {len(cases)}")
    _check_positive("timeout_s", timeout_s, 60.0)
    _check_positive("kill_grace_s", kill_grace_s, 60.0)
    _check_positive("batch_timeout_s", batch_timeout_s, 3600.0)
    if not isinstance(memory_mb, int) or not 64 <= memory_mb <= 65536:
        raise ValueError(f"memory_mb must be an int in [64, 65536], got {memory_mb!r}")
    if os.name != "posix":
        raise RuntimeError("the sandbox needs a POSIX system (Linux, macOS); on Windows use WSL or Colab")

    results: list[Result | None] = [None] * n
    expected, items, keys = {}, [], {}
    for i, (program, name, program_cases) in enumerate(zip(programs, function_names, cases)):
        if not isinstance(program, str):
            raise ValueError(f"programs[{i}] must be the program's source text, got {type(program).__name__}")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"function_names[{i}] must be a Python identifier, got {name!r}")
        calls, expected[i] = _split_cases(program_cases, f"cases[{i}]")
        status, detail, code = _screen(program, ALLOWED_IMPORTS)
        keys[i] = (program, name, marshal.dumps(calls), float(timeout_s), memory_mb, ALLOWED_IMPORTS,
                   SAFE_BUILTINS, _DISABLED_LAYERS)
        if status is not None:
            results[i] = Result(status, (False,) * len(calls), detail)
        elif keys[i] in _OUTCOMES:
            results[i] = _score(*_OUTCOMES[keys[i]], expected[i])
        else:
            items.append((i, code, name, calls))
    if items:
        config = {"timeout_s": float(timeout_s), "cpu_limit_s": math.ceil(timeout_s + kill_grace_s) + 1,
                  "memory_bytes": memory_mb * 2**20, "max_message_bytes": MAX_MESSAGE_BYTES,
                  "parallel": _parallelism()}
        outcomes = _run_batch(items, config, timeout_s + kill_grace_s, time.monotonic() + batch_timeout_s)
        for i, outcome in outcomes.items():
            results[i] = _score(*outcome, expected[i])
            _remember(keys[i], outcome)
    return results  # type: ignore[return-value]


def layers() -> tuple[str, ...]:
    """The sandbox layers active on this system, outermost first (see the module docstring).

    Starts the zygote if none is running (about as long as a small batch). :func:`run_cases`
    prints the same, with the layers that are missing and why, in one line the first time.
    """
    with _LOCK:
        report = _zygote().report
    return tuple(name for name, why in report.items() if not why)


def stop() -> None:
    """End this process's zygote, if one runs; the next :func:`run_cases` starts a new one.

    The zygote holds no candidate's state (it never runs candidate code), so there is no need
    to call this between batches; it runs at interpreter exit, and the zygote also dies with the
    process that started it.
    """
    global _ZYGOTE
    with _LOCK:
        if _ZYGOTE is not None:
            _ZYGOTE.stop()
            _ZYGOTE = None


@lru_cache(maxsize=8192)  # a policy repeats itself: PPO batches are full of identical programs
def _screen(program: str, allowed_imports: tuple[str, ...]) -> tuple[str | None, str, CodeType | None]:
    """``(REJECTED, reason, None)``, ``(ERROR, "SyntaxError", None)``, or ``(None, "", code)``
    for a program to run.

    The program is parsed and compiled here: neither runs any of it (compiling is the parse the
    static guard needs, then code generation), and a code object sent to the zygote spares each
    candidate's process the compiler's work (and the memory pages it would copy doing it).
    """
    if len(program) > _MAX_PROGRAM_CHARS:
        return REJECTED, f"program longer than {_MAX_PROGRAM_CHARS} characters", None
    tree = parse_or_none(program)
    if tree is None:
        return ERROR, "SyntaxError", None
    reason = _refuse(tree, allowed_imports)
    if reason is not None:
        return REJECTED, reason, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return None, "", compile(tree, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):  # ``break`` outside a loop
        return ERROR, "SyntaxError", None


# What programs returned, by (program, function, arguments, limits, sandbox settings): a policy
# repeats itself, and a program that ran once with these arguments returns the same again
# (candidates see no clock, no randomness and no files). Only ordinary outcomes are kept
# (``ok``, ``error``), small ones, the most recent few thousand; a program that was stopped or
# whose message could not be read runs again next time.
_OUTCOMES: "OrderedDict[tuple, tuple]" = OrderedDict()
_OUTCOMES_KEPT = 4096


def _remember(key: tuple, outcome: tuple) -> None:
    status, _, outputs = outcome
    if status in (OK, ERROR) and len(repr(outputs)) <= 4096:
        _OUTCOMES[key] = outcome
        while len(_OUTCOMES) > _OUTCOMES_KEPT:
            _OUTCOMES.popitem(last=False)


def _check_positive(name: str, value: float, high: float) -> None:
    if not isinstance(value, (int, float)) or not 0 < value <= high:
        raise ValueError(f"{name} must be in (0, {high}], got {value!r}")


def _split_cases(cases, where: str) -> tuple[list[tuple], list]:
    """``(argument tuples, expected answers)`` of one program's cases, checked to be plain data."""
    if isinstance(cases, (str, bytes)) or not isinstance(cases, (list, tuple)):
        raise ValueError(f"{where} must be a list of (args, expected) pairs, got {type(cases).__name__}")
    calls, answers = [], []
    for k, case in enumerate(cases):
        if not isinstance(case, (list, tuple)) or len(case) != 2:
            raise ValueError(f"{where}[{k}] must be an (args, expected) pair, got {case!r:.80}")
        args, answer = case
        if not isinstance(args, (list, tuple)) or not _is_plain(list(args), 0):
            raise ValueError(f"{where}[{k}]: args must be a tuple of plain data (None, bool, int, float, "
                             f"str, and lists, tuples, dicts of them), got {args!r:.80}")
        if not _is_plain(answer, 0):
            raise ValueError(f"{where}[{k}]: expected must be plain data (None, bool, int, float, str, "
                             f"and lists, tuples, dicts of them), got {answer!r:.80}")
        calls.append(tuple(args))
        answers.append(answer)
    return calls, answers


def _is_plain(value, depth: int) -> bool:
    """Whether ``value`` is plain data that can cross the sandbox's boundary (exact types)."""
    kind = type(value)
    if kind not in _PLAIN or depth > zygote.MAX_DEPTH:
        return False
    if kind in (list, tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(_is_plain(k, depth + 1) and _is_plain(v, depth + 1) for k, v in value.items())
    return True


def _parallelism() -> int:
    """Candidates run at once: one per CPU this process may use (at least 1, at most 8)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 8))


def _run_batch(items: list, config: dict, kill_after_s: float, deadline: float) -> dict[int, tuple]:
    """``{index: (status, detail, outputs)}`` for every item, from the zygote (a new one, should one die)."""
    outcomes: dict[int, tuple] = {}
    with _LOCK:
        while len(outcomes) < len(items) and time.monotonic() < deadline:
            todo = [item for item in items if item[0] not in outcomes]
            new = _zygote().run(todo, config, kill_after_s, deadline)
            if not new:
                break  # a zygote that finished nothing would not do better a second time
            outcomes.update(new)
    late = (TIMEOUT, "batch time limit", []) if time.monotonic() >= deadline else (
        CRASHED, "the sandbox's zygote died", [])
    return {item[0]: outcomes.get(item[0], late) for item in items}


_LOCK = threading.Lock()  # one batch at a time per process (threads wait their turn)
_ZYGOTE: "_Zygote | None" = None


def _zygote() -> "_Zygote":
    """This process's zygote: the running one if it still serves this configuration, else a new one."""
    global _ZYGOTE
    setup = {"modules": ALLOWED_IMPORTS, "builtins": SAFE_BUILTINS, "disabled": _DISABLED_LAYERS}
    if _ZYGOTE is not None and (_ZYGOTE.owner != os.getpid() or _ZYGOTE.setup != setup or not _ZYGOTE.alive()):
        _ZYGOTE.stop()  # a no-op in a forked child: that zygote is its parent's
        _ZYGOTE = None
    if _ZYGOTE is None:
        _ZYGOTE = _Zygote(setup)
        _announce(_ZYGOTE.report)
    return _ZYGOTE


class _Zygote:
    """The zygote process (:mod:`minippo.lm.sandbox_zygote`) and the pipes to it.

    Started once and kept for the batches that follow: the interpreter, the allowed modules and
    the namespaces are set up once, and a batch costs one fork per candidate. Anything
    unexpected (a deadline of the whole batch, a reply that breaks the protocol, the zygote's
    death) ends it; the next batch starts a new one.
    """

    def __init__(self, setup: dict):
        self.setup, self.owner, self.buffer = setup, os.getpid(), bytearray()
        self.stderr = tempfile.TemporaryFile()  # unnamed: nothing to leave behind
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", zygote.__file__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, cwd="/",
            env={"PATH": os.defpath, "MINIPPO_SANDBOX_CALLER": str(os.getpid())},
            start_new_session=True,
        )
        self.pids = {self.process.pid}  # the zygote's processes, as this process sees them
        self.report: dict[str, str] = {}
        ready = None
        try:
            self.send(_request(setup))
            limit = time.monotonic() + _STARTUP_TIMEOUT_S
            while ready is None and time.monotonic() < limit:
                frames, ended = _read_frames(self.process.stdout.fileno(), self.buffer, limit - time.monotonic())
                ready = next((f for f in frames if f[0] == "ready"), None)
                if ended:
                    break
        except (OSError, ValueError):
            pass
        if ready is None:
            self.stop()
            self.stderr.seek(0)
            raise RuntimeError(f"the sandbox's zygote failed to start (exit {self.process.returncode}):\n"
                               + self.stderr.read()[-2000:].decode(errors="replace"))
        self.pids.add(ready[1])
        self.report = dict(_CALLER_LAYERS)
        for line in ready[4].decode(errors="replace").splitlines():
            name, _, why = line.partition("\t")
            self.report[name] = why

    def run(self, items: list, config: dict, kill_after_s: float, deadline: float) -> dict[int, tuple]:
        """Serve one batch: ``{index: (status, detail, outputs)}`` for the items it finished,
        killed or lost; items it never started are missing. Kills each candidate still running
        ``kill_after_s`` seconds (on this process's clock) after the zygote said it started."""
        calls = {i: len(c) for i, _, _, c in items}
        started: dict[int, float] = {}  # index -> when this process learnt that it started
        outcomes: dict[int, tuple] = {}
        idle = False
        try:
            self.send(_request((config, items)))
            while not idle:
                now = time.monotonic()
                for i, t in started.items():
                    if i not in outcomes and now - t >= kill_after_s:
                        outcomes[i] = (TIMEOUT, f"killed after {now - t:.2f} s wall time", [])
                        self.send(b"kill %d\n" % i)
                if now >= deadline:
                    break
                wake = min([deadline] + [t + kill_after_s for i, t in started.items() if i not in outcomes])
                frames, ended = _read_frames(self.process.stdout.fileno(), self.buffer, wake - now)
                for kind, index, code, flag, payload in frames:
                    if kind == "start" and index in calls:
                        started[index] = time.monotonic()
                    elif kind == "done" and index in calls and index not in outcomes:
                        outcomes[index] = _outcome(code, flag, payload, calls[index])
                    idle = idle or kind == "idle"
                if ended:
                    break
        except (OSError, ValueError):  # the zygote is gone, or broke the protocol
            pass
        except BaseException:  # KeyboardInterrupt in a notebook: leave no batch half-served
            self.stop()
            raise
        if not idle:
            self.stop()  # in an unknown state: the next batch gets a new zygote
        lost = (TIMEOUT, "batch time limit", []) if time.monotonic() >= deadline else (
            CRASHED, "the sandbox's zygote died", [])
        for i in started:
            outcomes.setdefault(i, lost)
        return outcomes

    def send(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def alive(self) -> bool:
        """Whether the zygote still runs; where ``waitid`` can look without reaping (Linux),
        without reaping it (see :meth:`stop`)."""
        if self.process.returncode is not None:
            return False
        if hasattr(os, "waitid"):
            return os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        return self.process.poll() is None

    def stop(self) -> None:
        """Close its stdin (it exits at end of file), give it a moment, kill its group, reap it."""
        if self.owner != os.getpid() or self.process.returncode is not None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        limit = time.monotonic() + _EXIT_GRACE_S
        while self.alive() and time.monotonic() < limit:
            time.sleep(0.0005)
        # Kill the group before reaping the leader: while the leader is unreaped its pid, and
        # so the group id, cannot be reused by an unrelated process.
        if self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process.wait()
        self.process.stdout.close()
        self.stderr.close()
        # The zygote proper is the init of its PID namespace: once it is gone, the kernel has
        # ended every candidate. Wait for that (it may outlive the process that waited for it).
        limit = time.monotonic() + _EXIT_GRACE_S + 2.0
        while not all(_gone(pid) for pid in self.pids) and time.monotonic() < limit:
            time.sleep(0.001)


def _gone(pid: int) -> bool:
    """Whether a process has exited (a zombie counts as gone). Only reads /proc; without it, True."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _request(obj) -> bytes:
    """A request for the zygote: ``batch size`` and the :mod:`marshal` data."""
    data = marshal.dumps(obj)
    return b"batch %d\n" % len(data) + data


def _read_frames(fd: int, buffer: bytearray, timeout: float) -> tuple[list[tuple], bool]:
    """Wait up to ``timeout`` seconds for the zygote's output; return the complete frames and
    whether its stdout has ended. A frame is ``kind index code flag size`` + payload; a header
    that is not that raises ValueError."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ended = False
    if poller.poll(max(timeout, 0.0) * 1000):
        chunk = os.read(fd, 1 << 16)
        ended = not chunk
        buffer += chunk
    frames = []
    while (newline := buffer.find(b"\n", 0, 200)) >= 0:
        kind, *numbers = buffer[:newline].decode("ascii").split()
        index, code, flag, size = (int(x) for x in numbers)
        if len(buffer) < newline + 1 + size:
            break
        frames.append((kind, index, code, flag, bytes(buffer[newline + 1:newline + 1 + size])))
        del buffer[:newline + 1 + size]
    if newline < 0 and len(buffer) >= 200:
        raise ValueError("no frame header in the zygote's output")
    return frames, ended


def _outcome(code: int, overflow: int, message: bytes, n_calls: int) -> tuple[str, str, list]:
    """``(status, detail, outputs)`` of a candidate from its exit code and its message."""
    if code == zygote.CPU_EXIT or code == -signal.SIGXCPU:
        return TIMEOUT, "CPU time limit", []
    if code == zygote.SETUP_EXIT:
        return CRASHED, "a sandbox layer could not be set up", []
    if code < 0:
        try:
            return CRASHED, f"died of {signal.Signals(-code).name}", []
        except ValueError:
            return CRASHED, f"died of signal {-code}", []
    if code != 0:
        return CRASHED, f"exited with code {code}", []
    if overflow:
        return MALFORMED, f"message longer than {MAX_MESSAGE_BYTES} bytes", []
    if not message:
        return MALFORMED, "no message", []
    try:
        return _decode(message, n_calls)
    except Exception as e:  # anything at all: a candidate's bytes never raise here
        return MALFORMED, f"unreadable message ({type(e).__name__})", []


def _decode(message: bytes, n_calls: int) -> tuple[str, str, list]:
    """Parse ``[status, detail, [[true, value] | [false, reason], ...]]``; raise if it is not that."""
    decoded = json.loads(message)
    if type(decoded) is not list or len(decoded) != 3:
        raise ValueError("not [status, detail, outputs]")
    claim, detail, outputs = decoded
    if claim not in _CLAIMED or type(detail) is not str or type(outputs) is not list:
        raise ValueError("bad status, detail or outputs")
    if claim != "ok":
        return _CLAIMED[claim], detail, []
    if len(outputs) != n_calls:
        raise ValueError(f"{len(outputs)} outputs for {n_calls} cases")
    values = []
    for entry in outputs:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not bool:
            raise ValueError("bad output entry")
        if entry[0]:
            values.append((True, _from_wire(entry[1], 0)))
        elif type(entry[1]) is str:
            values.append((False, entry[1]))
        else:
            raise ValueError("bad failure reason")
    return OK, detail, values


def _from_wire(value, depth: int):
    """The plain value a JSON value stands for: lists as lists, ``{"tuple": [...]}`` as a tuple,
    ``{"dict": [[key, value], ...]}`` as a dict; raise for anything else."""
    if depth > zygote.MAX_DEPTH:
        raise ValueError("nested too deeply")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [_from_wire(v, depth + 1) for v in value]
    if kind is dict and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "tuple" and type(inner) is list:
            return tuple(_from_wire(v, depth + 1) for v in inner)
        if tag == "dict" and type(inner) is list:
            pairs = [_from_wire(pair, depth + 1) for pair in inner]
            if all(type(pair) is list and len(pair) == 2 for pair in pairs):
                return {key: v for key, v in pairs}  # an unhashable key raises TypeError
    raise ValueError("not a plain value")


def _score(status: str, detail: str, outputs: list, expected: list) -> Result:
    """Compare what came back with the expected answers, here, on plain data only."""
    detail = "".join(c for c in detail[:80] if c.isalnum() or c in "_. ")
    if status != OK:
        return Result(status, (False,) * len(expected), detail)
    passed, first_failure = [], ""
    for k, ((returned, value), answer) in enumerate(zip(outputs, expected)):
        ok = returned and value == answer
        passed.append(bool(ok))
        if not ok and not first_failure:
            why = "wrong answer" if returned else "".join(c for c in value[:60] if c.isalnum() or c in "_. ")
            first_failure = f"case {k}: {why}"
    return Result(OK, tuple(passed), first_failure or detail)


_ANNOUNCED: dict[str, str] | None = None  # the layer report last printed


def _announce(report: dict[str, str]) -> None:
    """Print one line about the layers when this process has not printed that report yet."""
    global _ANNOUNCED
    if report != _ANNOUNCED:
        _ANNOUNCED = report
        missing = [f"{name} ({why})" for name, why in report.items() if why]
        print(f"minippo sandbox layers: {', '.join(k for k, v in report.items() if not v)}"
              + (f"; not used here: {'; '.join(missing)}" if missing else ""), file=sys.stderr)


def _stop_at_exit() -> None:
    """At interpreter exit: end the zygote without waiting for the lock a dying thread may hold."""
    if _ZYGOTE is not None:
        _ZYGOTE.stop()


atexit.register(_stop_at_exit)
