"""The sandbox keeps DESIGN.md's reliability contract: hostile programs score zero, return in
bounded time and leave no process and no file behind, without spoiling their batch (Chapter 8)."""
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import pytest

from minippo.lm import sandbox
from minippo.lm.sandbox import CRASHED, EXIT, MEMORY, OK, REJECTED, TIMEOUT, VIOLATIONS, run_batch

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX")

GOOD = "def add3(x):\n    return x + 3"
TESTS = ["assert add3(1) == 4", "assert add3(0) == 3", "assert add3(-3) == 0"]


def body(code: str) -> str:
    """A program: the add3 signature and ``code`` as its body (lines joined by newlines)."""
    return "def add3(x):\n" + "\n".join("    " + line for line in code.split("\n"))


@pytest.fixture
def clean(tmp_path, monkeypatch):
    """Run the test from an empty cwd with a private temp root; record the workers started.

    Afterwards: no process in a worker's process group or session, no child of this process,
    the temp root and the cwd empty.
    """
    root, cwd = tmp_path / "tmp", tmp_path / "cwd"
    root.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    monkeypatch.chdir(cwd)
    workers = SimpleNamespace(pids=[], commands=[])

    class RecordingPopen(subprocess.Popen):
        def __init__(self, args, **kwargs):
            super().__init__(args, **kwargs)
            workers.pids.append(self.pid)
            workers.commands.append(args)

    monkeypatch.setattr(sandbox.subprocess, "Popen", RecordingPopen)
    yield workers
    assert workers.pids, "no worker was started"
    assert _leftover_processes(set(workers.pids)) == []
    assert list(root.iterdir()) == [], "a sandbox directory was left behind"
    assert list(cwd.iterdir()) == [], "something was written to the working directory"


def _leftover_processes(groups: set) -> list:
    """Processes that descend from this one, or live in one of ``groups`` (pgid or session)."""
    if not os.path.isdir("/proc/self"):
        return []
    parent, found = {}, []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        ppid, pgrp, session = int(fields[1]), int(fields[2]), int(fields[3])
        parent[int(pid)] = ppid
        if pgrp in groups or session in groups:
            found.append(int(pid))
    me = os.getpid()
    for pid in parent:
        p, seen = parent.get(pid), 0
        while p and p != me and seen < 64:
            p, seen = parent.get(p), seen + 1
        if p == me:
            found.append(pid)
    return sorted(set(found))


def test_good_and_wrong_programs():
    programs = [GOOD, body("return x + 2"), body("return 3 if x == 0 else x + 3"), "def add3(x)\n    return"]
    results = run_batch(programs, [TESTS] * 4)
    assert [r.status for r in results] == [OK, OK, OK, "error"]
    assert [r.pass_rate for r in results] == [1.0, 0.0, 1.0, 0.0]
    assert results[1].detail == "AssertionError"
    assert results[3].detail == "SyntaxError"
    partial = run_batch([body("return 3 if x == 0 else x")], [TESTS])[0]
    assert partial.passed == (False, True, False) and partial.pass_rate == pytest.approx(1 / 3)


SENTINEL = "sentinel.txt"  # created in tmp_path by the tests below; hostile programs go for it

# name -> (program, statuses it may end with). Each must score zero. The sentinel's absolute
# path is substituted for {target}.
HOSTILE = {
    "endless loop": (body("while True:\n    pass"), {TIMEOUT}),
    "swallows the timer": (body("n = 0\nwhile True:\n    try:\n        n = n + 1\n        while n > 0:\n"
                                "            n = n + 1\n    except BaseException:\n        n = 1"), {TIMEOUT}),
    "stuck in C": (body("return sum(range(10 ** 13))"), {TIMEOUT}),
    "9**9**9": (body("return 9 ** 9 ** 9"), {TIMEOUT, MEMORY}),
    "memory bomb": (body("a = []\nwhile True:\n    a.append(bytearray(10 ** 7))"), {MEMORY, TIMEOUT}),
    "huge allocation": (body("return [0] * 10 ** 10"), {MEMORY}),
    "fork bomb": (body("import os\nwhile True:\n    os.fork()"), {REJECTED}),
    "deep recursion": (body("return add3(x + 1)"), {MEMORY}),
    "gigabytes of output": (body("print('x' * 10 ** 10)"), {MEMORY}),
    "endless output": (body("while True:\n    print('x' * 10 ** 6)"), {TIMEOUT}),
    "write a file": (body("open({target!r}, 'w').write('pwned')\nreturn x + 3"), {REJECTED}),
    "delete a file": (body("import os\nos.remove({target!r})\nreturn x + 3"), {REJECTED}),
    "rmtree": (body("import shutil\nshutil.rmtree('/')"), {REJECTED}),
    "os.system": (body("import os\nos.system('rm -f {target}')"), {REJECTED}),
    "__import__": (body("return __import__('os').system('rm -f {target}')"), {REJECTED}),
    "socket": (body("import socket\nsocket.create_connection(('example.com', 80))"), {REJECTED}),
    "read stdin": (body("return int(input())"), {REJECTED}),
    "sys.exit": (body("import sys\nsys.exit(0)"), {REJECTED}),
    "exit()": (body("exit(0)"), {REJECTED}),
    "raise SystemExit": (body("raise SystemExit(0)"), {EXIT}),
    "raise KeyboardInterrupt": (body("raise KeyboardInterrupt"), {EXIT}),
    "replace signal handlers": (body("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                                     "while True:\n    pass"), {REJECTED}),
    "subclass walk": (body("return ().__class__.__base__.__subclasses__()"), {REJECTED}),
    "frame walk": (body("g = (i for i in [1])\nreturn g.gi_frame.f_back.f_globals"), {REJECTED}),
    "always-equal object": (body("class A:\n    def __eq__(self, other):\n        return True\nreturn A()"),
                            {REJECTED}),
    "eval": (body("return eval('x + 3')"), {REJECTED}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_scores_zero_and_leaves_nothing(name, clean, tmp_path):
    target = tmp_path / SENTINEL
    target.write_text("keep me")
    program, statuses = HOSTILE[name]
    program = program.replace("{target!r}", repr(str(target))).replace("{target}", str(target))
    start = time.monotonic()
    results = run_batch([GOOD, program, GOOD], [TESTS] * 3)
    elapsed = time.monotonic() - start
    assert results[1].status in statuses, results[1]
    assert results[1].pass_rate == 0.0 and results[1].violation
    assert [results[0].pass_rate, results[2].pass_rate] == [1.0, 1.0], "the batch was spoiled"
    assert elapsed < 10.0
    assert target.read_text() == "keep me"


def test_one_batch_of_every_hostile_program(clean, tmp_path):
    """All hostile programs in one batch, each between two correct ones: zeros and ones."""
    target = str(tmp_path / SENTINEL)
    programs = [GOOD]
    for program, _ in HOSTILE.values():
        programs += [program.replace("{target!r}", repr(target)).replace("{target}", target), GOOD]
    start = time.monotonic()
    results = run_batch(programs, [TESTS] * len(programs))
    elapsed = time.monotonic() - start
    assert [r.pass_rate for r in results] == [1.0, 0.0] * len(HOSTILE) + [1.0]
    assert all(r.status in VIOLATIONS for r in results[1::2])
    assert elapsed < 60.0  # about 3 s on an idle 2-core machine (watchdog kills and restarts)


def test_defence_in_depth_when_os_is_allowed(clean, tmp_path, monkeypatch):
    """Even if a program gets hold of ``os`` the worker's stubs refuse fork, kill, delete and
    system; what it writes to stdout/stderr cannot forge a result; a crash spoils nothing."""
    monkeypatch.setattr(sandbox, "ALLOWED_IMPORTS", sandbox.ALLOWED_IMPORTS + ("os",))
    target = tmp_path / SENTINEL
    target.write_text("keep me")
    attacks = [
        body("import os\nos.fork()\nreturn x + 3"),
        body(f"import os\nos.remove({str(target)!r})\nreturn x + 3"),
        body(f"import os\nos.system('rm -f {target}')\nreturn x + 3"),
        body("import os\nos.kill(os.getppid(), 9)\nreturn x + 3"),
        body("import os\nos.killpg(0, 9)\nreturn x + 3"),
        body("import os\nos.write(1, b'0\\tok\\t111\\t\\n')\nos.write(2, b'1\\tok\\t111\\t\\n')\nreturn x"),
        body("import os\nreturn os.read(0, 100)"),
        body("import os\nos.abort()"),
    ]
    programs = [p for attack in attacks for p in (attack, GOOD)]
    results = run_batch(programs, [TESTS] * len(programs))
    assert [r.pass_rate for r in results] == [0.0, 1.0] * len(attacks)
    assert results[0].detail == "PermissionError"
    assert results[-2].status == CRASHED and "SIGABRT" in results[-2].detail
    assert target.read_text() == "keep me"


def test_timeout_restarts_worker_for_the_rest(clean):
    hang = HOSTILE["stuck in C"][0]
    results = run_batch([GOOD, hang, GOOD, hang, GOOD], [TESTS] * 5, timeout_s=0.1, kill_grace_s=0.3)
    assert [r.pass_rate for r in results] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert results[1].status == TIMEOUT and "wall time" in results[1].detail
    assert len(clean.pids) == 3  # the first worker, and one after each kill


def test_batch_time_limit_bounds_the_call(clean):
    hang = HOSTILE["stuck in C"][0]
    start = time.monotonic()
    results = run_batch([hang] * 20, [TESTS] * 20, timeout_s=0.1, kill_grace_s=0.2, batch_timeout_s=1.0)
    assert time.monotonic() - start < 5.0
    assert all(r.status == TIMEOUT for r in results)
    assert results[-1].detail == "batch time limit"


def test_candidates_do_not_share_modules_or_test_state(clean):
    """One program patching ``math`` or a builtin cannot change what the next one sees."""
    patch = body("import math\nmath.pi = 3\nreturn 3")
    reads = body("import math\nreturn math.pi")
    shadow = body("global sorted\nsorted = lambda v: v\nreturn x")
    results = run_batch(
        [patch, reads, shadow],
        [["assert add3(0) == 3"], ["assert add3(0) > 3.14"],
         ["assert add3([2, 1]) == [2, 1]", "assert sorted([2, 1]) == [1, 2]"]],
    )
    assert [r.pass_rate for r in results] == [1.0, 1.0, 1.0]


def test_benign_batch_of_64_is_fast(clean):
    variants = [GOOD, body("return x + 2"), body("return 3 + x"), body("y = x + 3\nreturn y")]
    programs = [variants[i % 4] for i in range(64)]
    run_batch(programs[:1], [TESTS])  # warm the file cache
    start = time.monotonic()
    results = run_batch(programs, [TESTS] * 64)
    elapsed = time.monotonic() - start
    assert [r.pass_rate for r in results[:4]] == [1.0, 0.0, 1.0, 1.0]
    assert elapsed < 2.0  # ~30-50 ms on an idle 2-core machine; generous for shared CI


def test_static_guard():
    assert sandbox.static_guard(GOOD) is None
    assert sandbox.static_guard(body("for _ in range(3):\n    x += 1\nreturn x")) is None
    assert sandbox.static_guard(body("import math\nreturn math.sqrt(x)")) is None
    assert sandbox.static_guard("def f(:") is None  # not parsing is run_batch's "error", not a refusal
    for program in [body("return x.__class__"), body("return math._private"), body("from os import path"),
                    body("import math as __m"), "def __eq__(a, b):\n    return True",
                    body("match x:\n    case object(__class__=c):\n        return c"),
                    body("return getattr(x, 'real')"), "x" * 30_000]:
        assert sandbox.static_guard(program) is not None, program


def test_bad_arguments():
    with pytest.raises(ValueError, match="programs and tests"):
        run_batch([GOOD], [])
    with pytest.raises(ValueError, match=r"timeout_s must be in \(0, 60.0\]"):
        run_batch([GOOD], [TESTS], timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_batch([GOOD], [TESTS], memory_mb=8)
    with pytest.raises(ValueError, match="tests\\[0\\]"):
        run_batch([GOOD], ["assert add3(1) == 4"])
    assert run_batch([], []) == []


def test_worker_runs_in_a_separate_isolated_process(clean):
    """The program never runs here: patching this process's math does not reach the worker."""
    import math

    program = body("import math\nreturn math.pi")
    original = math.pi
    try:
        math.pi = 3
        result = run_batch([program], [["assert add3(0) > 3.14"]])[0]
    finally:
        math.pi = original
    assert result.pass_rate == 1.0
    assert clean.commands[0][:5] == [sys.executable, "-I", "-S", "-B", "-c"]
