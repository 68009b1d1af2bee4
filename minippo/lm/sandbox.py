"""Run model-written Python in a separate, resource-limited, time-limited process.

Chapter 8 (``chapters/08_capstone_rlhf_code.ipynb``) rewards a tiny GPT for writing function
bodies that pass unit tests, so the tests have to *run* code nobody has read. DESIGN.md's
reliability contract says how: "Code produced by a language model never runs in the reader's
Python process: it runs in a separate, resource-limited, time-limited process, and hostile
programs (endless loops, memory and fork bombs, file deletion, huge output) score zero and
leave nothing behind." This module is that promise, in one function::

    results = run_batch(["def add3(x):\\n    return x + 3"], [["assert add3(1) == 4"]])
    results[0].status, results[0].pass_rate        # ('ok', 1.0)

How a batch runs (each layer holds if the one before it fails)
----------------------------------------------------------------
1. **Static guard, in this process, without running anything.** :func:`static_guard` parses the
   program with :func:`ast.parse` and refuses imports outside :data:`ALLOWED_IMPORTS`, the
   names of the builtins that open, evaluate, introspect or exit (``open``, ``eval``,
   ``getattr``, ``exit``, ...), dunder names (``__class__``, ``__import__``, ``def __eq__``),
   attributes that start with ``_``, and the frame and generator internals (``gi_frame``,
   ``f_globals``, ...) that classic sandbox escapes walk through. A refused program is never
   sent anywhere: status ``"rejected"``. (Dunders are also how a policy would hack the tests:
   an object whose ``__eq__`` is always true passes every ``assert f(x) == y``.)
2. **One worker process per batch**, started with :mod:`subprocess` as ``python -I -S -B``
   (isolated mode: no environment variables, no user site-packages, no script directory on the
   path; no ``site``; no ``.pyc`` written anywhere) in a fresh :class:`tempfile.TemporaryDirectory`
   that is removed afterwards, in its own session (``start_new_session=True``) so that one
   ``os.killpg`` reaches everything it might start. Its stdin, stdout and stderr are not the
   reader's: stdin and stdout are ``/dev/null``, stderr a file in the temporary directory. It
   inherits exactly one extra file descriptor, the pipe it reports results on, which candidate
   code cannot reach, so printing cannot spoof a result.
3. **Limits the worker sets on itself** before it runs any candidate: ``RLIMIT_AS`` (memory),
   ``RLIMIT_CPU``, ``RLIMIT_FSIZE = 0`` (no file can grow), ``RLIMIT_NOFILE``,
   ``RLIMIT_NPROC = 0`` (no fork; the kernel ignores it for root, e.g. in Colab, hence layers 1
   and 4) and ``RLIMIT_CORE = 0`` (a crash leaves no core file). They are set in the child at
   start rather than in ``preexec_fn``: ``preexec_fn`` is not safe in a process with threads
   (torch has thread pools) and forces ``fork`` where ``subprocess`` could use ``vfork``.
4. **Restricted builtins.** Candidates see an allow-list of builtins (:data:`SAFE_BUILTINS`): no
   ``open``, ``exec``, ``eval``, ``compile``, ``input``, ``exit``, ``getattr``, ``vars``, ``type``
   (``type("A", (), {"__eq__": ...})`` would bypass layer 1); ``print`` discards its output; and
   ``import`` gives a fresh copy of a whitelisted module (:data:`ALLOWED_IMPORTS`) so that one
   candidate cannot patch ``math`` for the next. As a further layer the worker replaces the
   process-starting, signal-setting and file-deleting functions of ``os``/``posix``/``_signal``
   and ``open`` by functions that raise :class:`PermissionError`.
5. **A per-candidate CPU timer in the worker** (``setitimer(ITIMER_PROF)``, re-armed for each
   candidate): an endless loop raises a private exception after ``timeout_s`` of CPU time, the
   candidate scores zero and the worker goes on with the next one. CPU time, not wall time, so a
   busy machine does not fail slow-but-correct candidates.
6. **The watchdog in this process is the guarantee.** The worker writes one line per finished
   candidate; the parent knows which candidate is running and since when. A candidate that
   swallows the timer's exception (``except BaseException``), or is stuck inside one C call
   (``9**9**9``), is still running ``kill_grace_s`` later: the parent kills the whole process
   group with ``SIGKILL``, scores that candidate ``"timeout"`` and starts a new worker for the
   candidates after it. A worker that dies (memory, a crash) is handled the same way:
   ``"crashed"`` for the candidate it was running, a new worker for the rest. Each restart
   retires at least one candidate, so a batch of ``n`` programs starts at most ``n`` workers,
   and ``batch_timeout_s`` bounds the whole call.

So one bad candidate scores zero **without spoiling the rest of its batch**, and the common case
costs one process start per batch. Measured on the book's 2-core machine: a batch of 64 benign
candidates with 4 tests each takes about 30 ms when the machine is idle (half of it the
interpreter starting, then roughly 0.1-0.2 ms per candidate), 50-100 ms while other jobs share
the cores. A hostile candidate costs its ``timeout_s`` of CPU (an endless loop), or
``timeout_s + kill_grace_s`` of wall time plus a new worker (code stuck in one C call).

Why not one forked process per candidate? A fork per candidate costs about a millisecond each
and needs ``RLIMIT_NPROC > 0`` in the worker, which candidates could then use too. Running
candidates one after another in one worker, with a fresh namespace and fresh module copies
each, and restarting the worker only after a kill or a crash, gives the same isolation of
scores at a fraction of the cost. Why not a warm worker reused across batches? It would save
the ~15 ms start, a small part of a PPO iteration, at the price of state that outlives a batch
and a process that outlives the call; a new worker per batch leaves nothing running between
calls.

What this is not: a security boundary against a determined attacker. Python-level restrictions
have a long history of escapes; layers 2-3 and 6 (a separate process, OS limits, process-group
kill, throw-away directory) are what bound the damage of an accident by a small model. For
untrusted code at scale, run the worker inside a container or gVisor/nsjail/firejail.
POSIX only (Linux, macOS; on macOS the kernel does not enforce ``RLIMIT_AS``).

Determinism: the worker runs with ``-I``, which ignores ``PYTHONHASHSEED``, so ``str`` hashes
are randomised per worker; a body whose answer depends on the iteration order of a set of
strings may pass a test in one run and fail it in the next. Tests should not depend on it.

Standard library only; the worker (:func:`_worker_main`) is a self-contained function of this
file that is sent to the interpreter as source.
"""
from __future__ import annotations

import ast
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

__all__ = [
    "Result",
    "run_batch",
    "static_guard",
    "parse_or_none",
    "OK",
    "ERROR",
    "REJECTED",
    "TIMEOUT",
    "MEMORY",
    "EXIT",
    "CRASHED",
    "VIOLATIONS",
    "ALLOWED_IMPORTS",
    "SAFE_BUILTINS",
]

# Result statuses. ``OK`` and ``ERROR`` are ordinary outcomes; the others are VIOLATIONS: the
# sandbox stopped or refused the program, and every one of its tests counts as failed.
OK = "ok"  #: the program ran; each test passed or failed on its own
ERROR = "error"  #: the program did not compile, or raised an Exception while being defined
REJECTED = "rejected"  #: the static guard refused it; it never ran
TIMEOUT = "timeout"  #: it used more than ``timeout_s`` of CPU, or was killed by the watchdog
MEMORY = "memory"  #: it ran out of memory or stack (``MemoryError``, ``RecursionError``)
EXIT = "exit"  #: it raised SystemExit, KeyboardInterrupt or another non-Exception to stop the worker
CRASHED = "crashed"  #: the worker process died while running it
VIOLATIONS = frozenset({REJECTED, TIMEOUT, MEMORY, EXIT, CRASHED})

#: Modules a candidate may import; each import returns a fresh copy of the public names.
ALLOWED_IMPORTS = ("math", "cmath", "itertools", "functools", "collections", "heapq", "bisect")

#: Builtins a candidate may use (plus every builtin exception class, ``print`` that discards its
#: output, and a whitelisting ``__import__``). Deliberately missing: open, exec, eval, compile,
#: input, exit, quit, help, breakpoint, getattr, setattr, delattr, hasattr, vars, globals,
#: locals, dir, type, memoryview.
SAFE_BUILTINS = (
    "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr",
    "classmethod", "complex", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hash", "hex", "id", "int", "isinstance", "issubclass", "iter", "len", "list",
    "map", "max", "min", "next", "object", "oct", "ord", "pow", "property", "range", "repr",
    "reversed", "round", "set", "slice", "sorted", "staticmethod", "str", "sum", "super",
    "tuple", "zip", "True", "False", "None", "Ellipsis", "NotImplemented", "__build_class__",
)

# Functions the worker replaces by one that raises PermissionError (layer 4 above).
_DENIED_OS = (
    "system", "popen", "fork", "forkpty", "register_at_fork", "kill", "killpg", "setsid",
    "setpgid", "setpgrp", "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp",
    "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp",
    "spawnvpe", "posix_spawn", "posix_spawnp", "remove", "unlink", "rmdir", "removedirs",
    "rename", "renames", "replace", "mkdir", "makedirs", "mkfifo", "mknod", "symlink", "link",
    "chmod", "chown", "lchown", "truncate", "chdir", "chroot", "putenv", "unsetenv", "open",
)
_DENIED_SIGNAL = ("signal", "setitimer", "alarm", "pthread_kill", "siginterrupt", "set_wakeup_fd")

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


@dataclass(frozen=True)
class Result:
    """What happened to one program of a batch.

    ``status`` is one of :data:`OK`, :data:`ERROR`, :data:`REJECTED`, :data:`TIMEOUT`,
    :data:`MEMORY`, :data:`EXIT`, :data:`CRASHED`; ``passed`` has one flag per test, all
    ``False`` unless the status is ``OK``; ``detail`` says why, in a few words (the first failing test's exception
    type, the refused name, how the worker died).
    """

    status: str
    passed: tuple[bool, ...]
    detail: str = ""

    @property
    def pass_rate(self) -> float:
        """Fraction of tests passed (0.0 for a program without tests)."""
        return sum(self.passed) / len(self.passed) if self.passed else 0.0

    @property
    def violation(self) -> bool:
        """True if the sandbox refused or stopped the program (see :data:`VIOLATIONS`)."""
        return self.status in VIOLATIONS


def static_guard(program: str) -> str | None:
    """Why the static guard refuses ``program``, or ``None`` if it may run (layer 1).

    Only parses (:func:`ast.parse` never executes). Refuses identifiers that start with ``__``
    (names, definitions, arguments, imports), attributes and imported names that start with
    ``_``, frame/generator/code internals, imports outside :data:`ALLOWED_IMPORTS`, the
    builtins in ``_FORBIDDEN_NAMES``, and programs over 20,000 characters. A program that
    does not parse is not refused here: it comes back from :func:`run_batch` as ``"error"``.
    """
    status, detail = _screen(program, ALLOWED_IMPORTS)
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


def run_batch(
    programs: Sequence[str],
    tests: Sequence[Sequence[str]],
    *,
    timeout_s: float = 0.05,
    memory_mb: int = 256,
    kill_grace_s: float = 0.5,
    batch_timeout_s: float = 30.0,
) -> list[Result]:
    """Run each program, then each of its tests, in one sandboxed worker process.

    ``tests[i]`` is a list of statements (usually ``assert f(x) == y``) for ``programs[i]``.
    Each test runs on its own in a fresh copy of the namespace the program left behind, so a
    failing or state-changing test does not affect the next; a test passes if it raises
    nothing. A program that runs out of time or memory or kills its worker forfeits all its
    tests. Returns one :class:`Result` per program, in order.

    Limits: ``timeout_s`` CPU seconds per program (its definition plus all its tests; the
    default 50 ms is about a thousand times what a one-line function and its tests use, and
    keeps a batch of 64 endless loops to a few seconds); ``memory_mb`` address space for the
    worker; the watchdog kills a program still running ``kill_grace_s`` wall seconds after its
    timeout; the whole call returns within about ``batch_timeout_s`` (what has not run by then
    is ``"timeout"``). See the module docstring for the layers, and DESIGN.md's reliability
    contract for the promise they keep.
    """
    if len(programs) != len(tests):
        raise ValueError(
            f"programs and tests must have the same length, got {len(programs)} and {len(tests)}"
        )
    _check_positive("timeout_s", timeout_s, 60.0)
    _check_positive("kill_grace_s", kill_grace_s, 60.0)
    _check_positive("batch_timeout_s", batch_timeout_s, 3600.0)
    if not isinstance(memory_mb, int) or not 64 <= memory_mb <= 65536:
        raise ValueError(f"memory_mb must be an int in [64, 65536], got {memory_mb!r}")
    if os.name != "posix":
        raise RuntimeError("the sandbox needs a POSIX system (Linux, macOS); on Windows use WSL or Colab")

    results: list[Result | None] = [None] * len(programs)
    pending = []
    for i, (program, program_tests) in enumerate(zip(programs, tests)):
        if isinstance(program_tests, str):
            raise ValueError(f"tests[{i}] must be a list of test statements, got a str")
        program_tests = tuple(program_tests)
        fail = (False,) * len(program_tests)
        status, detail = _screen(program, ALLOWED_IMPORTS)
        if status is None:
            pending.append((i, program, program_tests))
        else:
            results[i] = Result(status, fail, detail)

    config = {
        "timeout_s": float(timeout_s),
        "memory_bytes": memory_mb * 2**20,
        "builtins": SAFE_BUILTINS,
        "modules": ALLOWED_IMPORTS,
        "denied_os": _DENIED_OS,
        "denied_signal": _DENIED_SIGNAL,
    }
    deadline = time.monotonic() + batch_timeout_s
    while pending and time.monotonic() < deadline:
        # Each worker retires at least one program (finished, killed or crashed), so this loop
        # starts at most len(pending) workers.
        for i, result in _run_worker(pending, config, timeout_s + kill_grace_s, deadline).items():
            results[i] = result
        pending = [item for item in pending if results[item[0]] is None]
    for i, _, program_tests in pending:
        results[i] = Result(TIMEOUT, (False,) * len(program_tests), "batch time limit")
    return results  # type: ignore[return-value]


@lru_cache(maxsize=8192)  # a policy repeats itself: PPO batches are full of identical programs
def _screen(program: str, allowed_imports: tuple[str, ...]) -> tuple[str | None, str]:
    """``(REJECTED, reason)``, ``(ERROR, "SyntaxError")``, or ``(None, "")`` for a program to run."""
    if len(program) > _MAX_PROGRAM_CHARS:
        return REJECTED, f"program longer than {_MAX_PROGRAM_CHARS} characters"
    tree = parse_or_none(program)
    if tree is None:
        return ERROR, "SyntaxError"
    reason = _refuse(tree, allowed_imports)
    return (None, "") if reason is None else (REJECTED, reason)


def _check_positive(name: str, value: float, high: float) -> None:
    if not isinstance(value, (int, float)) or not 0 < value <= high:
        raise ValueError(f"{name} must be in (0, {high}], got {value!r}")


def _run_worker(items: list, config: dict, kill_after_s: float, deadline: float) -> dict[int, Result]:
    """Start one worker for ``items``; collect its result lines; kill it when a program overruns.

    Returns results for the programs it finished plus the one it was running when it was killed
    or died (``"timeout"``/``"crashed"``); the caller starts a new worker for the rest.
    """
    import marshal

    done: dict[int, Result] = {}
    cpu_s = int(len(items) * kill_after_s) + 5  # RLIMIT_CPU: a backstop behind the watchdog
    with tempfile.TemporaryDirectory(prefix="minippo-sandbox-", ignore_cleanup_errors=True) as tmp:
        with open(os.path.join(tmp, "payload.bin"), "wb") as f:
            marshal.dump(({**config, "cpu_s": cpu_s}, items), f)
        read_fd, write_fd = os.pipe()
        try:
            with open(os.path.join(tmp, "stderr.txt"), "wb") as stderr:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", "-c", _worker_source(), str(write_fd)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    cwd=tmp,
                    env={"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp},
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            ready, why = _collect(proc, read_fd, items, done, kill_after_s, deadline)
        finally:
            # Kill the group before reaping the leader: while the leader is a zombie its pid,
            # and so the group id, cannot be reused by an unrelated process.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            os.close(read_fd)
        if not ready and why == CRASHED:
            with open(os.path.join(tmp, "stderr.txt"), "rb") as f:
                err = f.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"sandbox worker failed to start (exit {proc.returncode}):\n{err}")
    if len(done) < len(items) and why is not None:
        i, _, program_tests = items[len(done)]
        detail = _exit_detail(proc.returncode) if why == CRASHED else why
        status = CRASHED if why == CRASHED else TIMEOUT
        done[i] = Result(status, (False,) * len(program_tests), detail)
    return done


def _collect(proc, read_fd, items, done, kill_after_s, deadline) -> tuple[bool, str | None]:
    """Read result lines until all items are done, the worker dies, or a program overruns.

    Returns ``(ready, why)``: whether the worker finished starting, and ``None`` (all done),
    ``CRASHED`` (the pipe closed early) or a timeout description (the caller kills the group).
    """
    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    buffer, ready = b"", False
    t_event = time.monotonic()  # when the running program (or the start-up) began
    while len(done) < len(items):
        limit = t_event + (kill_after_s if ready else _STARTUP_TIMEOUT_S)
        wait = min(limit, deadline) - time.monotonic()
        if wait <= 0:
            if not ready:
                return False, "worker did not start in time"
            return True, f"killed after {time.monotonic() - t_event:.2f} s wall time"
        if not poller.poll(wait * 1000):
            continue
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            return ready, CRASHED
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            t_event = time.monotonic()
            if line == b"ready":
                ready = True
                continue
            index, status, bits, detail = line.decode("ascii").split("\t", 3)
            i, _, program_tests = items[len(done)]
            if int(index) != i or len(bits) != len(program_tests):
                raise RuntimeError(f"sandbox protocol error: {line[:200]!r}")
            done[i] = Result(status, tuple(b == "1" for b in bits), detail)
    return ready, None


def _exit_detail(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"worker died of {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    return f"worker exited with code {returncode}"


_WORKER_SOURCE: str | None = None


def _worker_source() -> str:
    """The source the worker interpreter runs: :func:`_worker_main` and a call to it."""
    global _WORKER_SOURCE
    if _WORKER_SOURCE is None:
        import inspect

        _WORKER_SOURCE = inspect.getsource(_worker_main) + "\n_worker_main(int(__import__('sys').argv[1]))\n"
    return _WORKER_SOURCE


def _worker_main(result_fd: int) -> None:  # pragma: no cover - runs in the worker process
    """The worker: set limits, lock down, run each candidate and its tests, report by line.

    Runs as ``python -I -S -B -c <source>`` with the sandbox directory as working directory;
    self-contained (it sees none of this module's globals). Reports ``ready``, then for each
    item one line ``index<TAB>status<TAB>bits<TAB>detail`` on ``result_fd``; exits with
    ``os._exit(0)`` when done. Candidates reach none of the names used here.
    """
    import builtins
    import gc
    import io
    import marshal
    import os
    import resource
    import sys

    import _signal

    with open("payload.bin", "rb") as f:
        config, items = marshal.load(f)
    os.unlink("payload.bin")
    real_import = builtins.__import__

    # Layer 3: limits on this process, before any candidate runs.
    def limit(resource_id, value):
        soft, hard = resource.getrlimit(resource_id)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(resource_id, (value, value))
        except (ValueError, OSError):  # e.g. macOS refuses RLIMIT_AS; the watchdog still holds
            pass

    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_FSIZE, 0)
    limit(resource.RLIMIT_NOFILE, 16)
    limit(resource.RLIMIT_NPROC, 0)
    limit(resource.RLIMIT_CPU, config["cpu_s"])
    limit(resource.RLIMIT_AS, config["memory_bytes"])
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails, not kills

    # Layer 5: the per-candidate CPU timer. The handler only acts while a candidate runs.
    class CandidateTimeout(BaseException):
        pass

    running = [False]

    def on_timer(signum, frame):
        if running[0]:
            raise CandidateTimeout

    _signal.signal(_signal.SIGPROF, on_timer)
    setitimer, itimer_prof = _signal.setitimer, _signal.ITIMER_PROF
    write, exit_now, collect = os.write, os._exit, gc.collect

    # Layer 4, second line: take away process, signal and file functions, keeping our own
    # references above.
    def denied(*args, **kwargs):
        raise PermissionError("not allowed in the sandbox")

    for module, names in ((os, config["denied_os"]), (sys.modules.get("posix"), config["denied_os"]),
                          (_signal, config["denied_signal"])):
        for name in names:
            if module is not None and hasattr(module, name):
                setattr(module, name, denied)
    builtins.open = io.open = denied

    # Layer 4: restricted builtins, whitelisted imports of fresh module copies, no output.
    # Modules are imported on first use (importing all of them up front would add ~5 ms to
    # every batch), after the lockdown, so their copies carry the stubs.
    public = {}

    def safe_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or name not in config["modules"]:
            raise ImportError(f"import of {name!r} is not allowed in the sandbox")
        if name not in public:
            public[name] = {k: v for k, v in vars(real_import(name)).items() if not k.startswith("_")}
        module = type(sys)(name)
        vars(module).update(public[name])
        return module

    def silent_print(*args, **kwargs):
        return None

    safe = {name: getattr(builtins, name) for name in config["builtins"] if hasattr(builtins, name)}
    for name, value in vars(builtins).items():
        if isinstance(value, type) and issubclass(value, BaseException):
            safe[name] = value
    safe.update({"__import__": safe_import, "print": silent_print})
    gc.disable()  # garbage is collected after each candidate, inside its own time budget
    gc.freeze()  # ... and that collection skips everything the worker itself allocated

    compiled = {}

    def run(program, tests):
        """(status, passed, detail) of one candidate; runs with the timer armed."""
        passed = [False] * len(tests)
        try:
            namespace = {"__builtins__": dict(safe), "__name__": "candidate"}
            exec(compile(program, "<candidate>", "exec", dont_inherit=True, optimize=0), namespace)
        except (CandidateTimeout, MemoryError, RecursionError):
            raise
        except Exception as e:
            return "error", passed, type(e).__name__
        snapshot, detail = dict(namespace), ""
        for k, test in enumerate(tests):
            if test not in compiled:
                compiled[test] = compile(test, "<test>", "exec", dont_inherit=True, optimize=0)
            scope = dict(snapshot)
            scope["__builtins__"] = dict(safe)
            try:
                exec(compiled[test], scope)
                passed[k] = True
            except (CandidateTimeout, MemoryError, RecursionError):
                raise
            except Exception as e:  # a failed test; SystemExit & co. go to the caller
                detail = detail or type(e).__name__
        return "ok", passed, detail

    write(result_fd, b"ready\n")
    for index, program, tests in items:
        try:
            running[0] = True
            # The timer repeats: a candidate that swallows one CandidateTimeout meets the next.
            setitimer(itimer_prof, config["timeout_s"], config["timeout_s"] / 4)
            status, passed, detail = run(program, tests)
            collect()  # the candidate's cyclic garbage (and any finaliser) is charged to it
        except CandidateTimeout:
            status, passed, detail = "timeout", [False] * len(tests), "CPU time limit"
        except (MemoryError, RecursionError) as e:
            status, passed, detail = "memory", [False] * len(tests), type(e).__name__
        except BaseException as e:  # SystemExit, KeyboardInterrupt, ...: trying to stop us
            status, passed, detail = "exit", [False] * len(tests), type(e).__name__
        finally:
            running[0] = False
            setitimer(itimer_prof, 0)
        collect()  # after a timeout; the watchdog still charges a stuck finaliser to this index
        detail = "".join(c for c in str(detail)[:80] if c.isalnum() or c in "_. ")
        bits = "".join("1" if p else "0" for p in passed)
        write(result_fd, f"{index}\t{status}\t{bits}\t{detail}\n".encode("ascii", "replace"))
    exit_now(0)
