"""The sandbox keeps its docstring's contract (minippo/lm/sandbox.py; Chapter 8): hostile
programs, including programs written against this sandbox, score zero, return within their
deadlines, cannot touch the caller or each other, and leave no process and no file behind;
expected answers never enter the sandbox, and nothing a candidate writes makes the caller raise.

Many programs here first get past the two Python-level layers (the static guard and the
restricted builtins) with a trick that needs no dunder in the source, and then attack the
operating-system layers with the real builtins: ``test_the_escape_is_real`` shows that the
trick works, so that what the other tests show is the OS layers holding.
"""
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
import uuid
from types import SimpleNamespace

import pytest

from minippo.lm import sandbox
from minippo.lm.sandbox import (
    CRASHED, ERROR, EXIT, MALFORMED, MEMORY, OK, REJECTED, TIMEOUT, VIOLATIONS, run_cases,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX")

GOOD = "def add3(x):\n    return x + 3"
CASES = [((1,), 4), ((0,), 3), ((-3,), 0)]
KILL_AFTER_S = 0.05 + 0.5  # run_cases' default timeout_s + kill_grace_s


def body(code: str) -> str:
    """A program: the add3 signature and ``code`` as its body (lines joined by newlines)."""
    return "def add3(x):\n" + "\n".join("    " + line for line in code.split("\n"))


def escaped(code: str, then: str = "return None") -> str:
    """An add3 whose body gets out of the restricted builtins without a dunder in its source.

    ``functools.update_wrapper(g, collections.namedtuple, updated=("__globals__",))`` copies the
    collections module's globals into the candidate's own, among them ``_sys``, the real
    ``sys``; its ``modules["builtins"].exec`` then runs ``code`` with the real builtins (the
    static guard reads only identifiers, not strings). ``code`` sees the argument as ``x`` and
    leaves what it wants returned in ``result``; ``then`` is the body's last line.
    """
    return body(
        "import collections, functools\n"
        "def g():\n    pass\n"
        "functools.update_wrapper(g, collections.namedtuple, assigned=(), updated=('__globals__',))\n"
        "scope = {'x': x, 'result': None, '__builtins__': _sys.modules['builtins']}\n"
        f"_sys.modules['builtins'].exec({code!r}, scope)\n"
        f"{then}"
    )


def active(layer: str) -> bool:
    return layer in sandbox.layers()


def sandbox_processes() -> list[int]:
    """Every process this test process's sandbox started (its zygote included): they carry
    ``MINIPPO_SANDBOX_CALLER=<this pid>`` in their environment, even after an exec."""
    if not os.path.isdir("/proc/self"):
        return []
    tag, found = f"MINIPPO_SANDBOX_CALLER={os.getpid()}".encode(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if tag in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue  # exited while we looked, or not ours to read
    return sorted(found)


def zygote_pids() -> set:
    return set(sandbox._ZYGOTE.pids) if sandbox._ZYGOTE is not None else set()


def candidate_leftovers(within_s: float = 2.0) -> set:
    """The sandbox's processes other than its zygote, once those killed have had ``within_s`` to
    go: SIGKILL to a process group returns before the kernel has ended every member, so a scan
    right after ``run_cases`` can still see one. The candidates' sleepers sleep far longer than
    ``within_s``, so a process that vanishes in time was killed, not finished."""
    deadline = time.monotonic() + within_s
    while True:
        left = set(sandbox_processes()) - zygote_pids()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def snapshot(path) -> dict:
    """Names, sizes and contents of the files under ``path`` (not following links)."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            info = os.lstat(full)
            content = open(full, "rb").read() if stat.S_ISREG(info.st_mode) else None
            out[os.path.relpath(full, path)] = (stat.S_IFMT(info.st_mode), content)
    return out


def ipc_objects() -> set:
    """System V shared-memory segments, semaphore sets and message queues in this process's IPC
    namespace made by ``nobody`` or by this uid (``/proc/sysvipc``): ``(kind, key, id)``."""
    out = set()
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                header, *rows = [line.split() for line in f.read().splitlines()]
        except OSError:
            continue
        cuid = header.index("cuid")
        out |= {(kind, row[0], row[1]) for row in rows if int(row[cuid]) in (65534, os.getuid())}
    return out


@pytest.fixture
def guarded(tmp_path, monkeypatch):
    """A fresh zygote, and bait for hostile programs: a directory in /tmp that anyone may write
    to, holding a file that anyone may write (so that only the sandbox stands in the way), an
    empty working directory, and a path in /tmp that must not appear. Afterwards: no sandbox
    process but the zygote, and none at all once it is stopped; the bait, the working directory,
    ``/`` and this IPC namespace's shared memory, semaphores and message queues as they were."""
    sandbox.stop()
    bait, cwd = tempfile.mkdtemp(prefix="minippo-sandbox-bait-", dir="/tmp"), tmp_path / "cwd"
    cwd.mkdir()
    os.chmod(bait, 0o1777)
    keep = os.path.join(bait, "keep.txt")
    with open(keep, "w") as f:
        f.write("keep me")
    os.chmod(keep, 0o666)
    monkeypatch.chdir(cwd)
    marker = f"/tmp/minippo-sandbox-test-{uuid.uuid4().hex}"
    before = snapshot(bait), sorted(os.listdir("/")), ipc_objects()
    try:
        yield SimpleNamespace(bait=bait, keep=keep, marker=marker, caller=os.getpid())
        leftovers = candidate_leftovers()
        sandbox.stop()
        assert leftovers == set(), "a candidate's process outlived it"
        assert sandbox_processes() == [], "the sandbox left a process behind"
        after = snapshot(bait), sorted(os.listdir("/")), ipc_objects()
        assert after == before, "a file or an IPC object changed outside the sandbox"
        assert os.listdir(cwd) == [], "something was written to the working directory"
        assert not os.path.exists(marker), "a file was created in /tmp"
    finally:
        shutil.rmtree(bait, ignore_errors=True)
        if os.path.lexists(marker):
            os.remove(marker)


def fill(program: str, guard: SimpleNamespace) -> str:
    """The program with the bait's paths in place of BAIT_PATH, KEEP_PATH, MARKER_PATH and CALLER_PID
    (tokens without quotes, so that they survive being quoted inside an escaped program)."""
    return (program.replace("BAIT_PATH", guard.bait).replace("KEEP_PATH", guard.keep)
            .replace("MARKER_PATH", guard.marker).replace("CALLER_PID", str(guard.caller)))


def test_good_and_wrong_programs():
    programs = [GOOD, body("return x + 2"), body("return 3 if x == 0 else x + 3"), "def add3(x)\n    return",
                "def other(x):\n    return x + 3", body("return 1 // x + x + 3")]
    results = run_cases(programs, ["add3"] * 6, [CASES] * 6)
    assert [r.status for r in results] == [OK, OK, OK, ERROR, ERROR, OK]
    assert [r.pass_rate for r in results[:5]] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert results[1].detail == "case 0: wrong answer"
    assert results[3].detail == "SyntaxError" and results[4].detail == "NameError"
    assert results[5].passed == (False, False, False) and results[5].detail == "case 0: wrong answer"
    partial = run_cases([body("return 3 if x == 0 else x")], ["add3"], [CASES])[0]
    assert partial.passed == (False, True, False) and partial.pass_rate == pytest.approx(1 / 3)
    raises = run_cases([body("return 1 // x")], ["add3"], [[((0,), 0), ((1,), 1)]])[0]
    assert raises.passed == (False, True) and raises.detail == "case 0: ZeroDivisionError"


def test_answers_are_compared_here_as_plain_data():
    """What comes back is plain data compared with ``==`` (so ``0 / 3 == 0`` and ``1 == True``
    pass, as ``assert`` did); anything else is a failed case, whatever its ``__eq__``."""
    cases = [((2,), (2, [2.5, None], {"k": (True, "é")})), ((0,), 0), ((1,), True), ((3,), float("inf"))]
    program = ("def f(x):\n    if x == 2:\n        return (x, [x + 0.5, None], {'k': (True, 'é')})\n"
               "    return x / 3 if x == 0 else (1 if x == 1 else float('inf'))")
    assert run_cases([program], ["f"], [cases])[0].passed == (True, True, True, True)
    odd = {"a set": "return {x}", "too large": "return [x] * 600000",
           "too deep": "v = []\nfor _ in range(40):\n    v = [v]\nreturn v", "huge int": "return 10 ** 5000",
           "a cycle": "v = [x]\nv.append(v)\nreturn v", "nan": "return float('nan')",
           "a list, not a tuple": "return [x, 1]"}
    programs = ["def f(x):\n" + "\n".join("    " + line for line in code.split("\n")) for code in odd.values()]
    answers = [{1}, None, None, 10 ** 5000, None, float("nan"), (1, 1)]
    results = run_cases(programs, ["f"] * len(odd), [[((1,), a if a != {1} else [1])] for a in answers])
    assert [r.status for r in results] == [OK] * len(odd)
    assert [r.pass_rate for r in results] == [0.0] * len(odd)
    details = dict(zip(odd, (r.detail for r in results)))
    assert details["a set"] == "case 0: returned set"
    assert details["too large"] == "case 0: output too large" and details["too deep"] == "case 0: nested too deeply"
    assert details["a list, not a tuple"] == "case 0: wrong answer"


SENTINEL_ANSWER = "the-answer-" + uuid.uuid4().hex


def test_expected_answers_never_enter_the_sandbox(monkeypatch):
    """The request the zygote gets holds the programs and the arguments, not the answers."""
    sent = []
    real = sandbox._request
    monkeypatch.setattr(sandbox, "_request", lambda obj: sent.append(real(obj)) or sent[-1])
    result = run_cases([body("return 'a guess'")], ["add3"], [[((1,), SENTINEL_ANSWER)]])[0]
    assert result.pass_rate == 0.0 and sent
    assert not any(SENTINEL_ANSWER.encode() in request for request in sent)
    assert any(b"a guess" in request for request in sent)  # the program did go that way


# name -> (program, statuses it may end with). Each must score zero. BAIT_PATH, KEEP_PATH,
# MARKER_PATH and CALLER_PID are filled in by the test.
HOSTILE = {
    # The classic set: none of these needs to get past the Python-level layers.
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
    "write a file": (body("open('KEEP_PATH', 'w').write('pwned')\nreturn x + 3"), {REJECTED}),
    "delete a file": (body("import os\nos.remove('KEEP_PATH')\nreturn x + 3"), {REJECTED}),
    "rmtree": (body("import shutil\nshutil.rmtree('/')"), {REJECTED}),
    "os.system": (body("import os\nos.system('rm -f KEEP_PATH')"), {REJECTED}),
    "__import__": (body("return __import__('os').system('rm -f KEEP_PATH')"), {REJECTED}),
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
    # Past the static guard, without a dunder or a private attribute in the source.
    "issue 12's update_wrapper": (
        "def add3(x):\n    import functools\n    def g():\n        pass\n"
        "    functools.update_wrapper(g, print, assigned=(), updated=('__builtins__',))\n"
        "    return type('Any', (), {'__eq__': lambda s, o: True})()", {OK}),
    "always-equal object, escaped": (escaped("result = type('Any', (), {'__eq__': lambda s, o: True})()",
                                             "return scope['result']"), {OK}),
    "always-equal object from a string annotation": (
        body("import functools\n@functools.singledispatch\ndef f(arg):\n    return 0\n"
             "@f.register\ndef h(arg: \"().__class__.__class__('Any', (), {'__eq__': lambda s, o: True})\"):\n"
             "    return 1\nreturn [k for k in f.registry if k is not object][0]()"), {OK, ERROR}),
    # Past both Python-level layers, against the operating system's.
    "escaped: write and create files": (escaped(
        "import os\n"
        "for attempt in (lambda: open('KEEP_PATH', 'w'), lambda: open('BAIT_PATH/new.txt', 'w'),\n"
        "                lambda: open('MARKER_PATH', 'w'), lambda: os.mkdir('BAIT_PATH/dir'),\n"
        "                lambda: os.symlink('/etc/passwd', 'BAIT_PATH/link'), lambda: os.mkfifo('MARKER_PATH'),\n"
        "                lambda: os.truncate('KEEP_PATH', 0), lambda: os.chmod('KEEP_PATH', 0)):\n"
        "    try:\n        attempt()\n    except OSError:\n        pass"), {OK}),
    "escaped: delete and rename files": (escaped(
        "import os\n"
        "for attempt in (lambda: os.remove('KEEP_PATH'), lambda: os.rename('KEEP_PATH', 'MARKER_PATH'),\n"
        "                lambda: os.rmdir('BAIT_PATH'), lambda: os.unlink('KEEP_PATH')):\n"
        "    try:\n        attempt()\n    except OSError:\n        pass"), {OK}),
    "escaped: a process in a new session": (escaped(
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    os.setsid()\n    time.sleep(0.5)\n    open('MARKER_PATH', 'w')\n    os._exit(0)"),
        {OK, CRASHED}),
    "escaped: exec a shell": (escaped(
        "import os\nos.execv('/bin/sh', ['sh', '-c', 'echo pwned > MARKER_PATH; rm -f KEEP_PATH; sleep 30 &'])"),
        {OK, MALFORMED, CRASHED}),  # as nobody, even execve fails: RLIMIT_NPROC is exceeded
    "escaped: kill the caller and everyone else": (escaped(
        "import os, signal\n"
        "for attempt in (lambda: os.kill(CALLER_PID, signal.SIGKILL), lambda: os.killpg(os.getpgid(CALLER_PID), 9),\n"
        "                lambda: os.kill(-1, signal.SIGKILL), lambda: os.kill(os.getppid(), signal.SIGKILL)):\n"
        "    try:\n        attempt()\n    except OSError:\n        pass"), {OK, CRASHED}),
    "escaped: forge a passing message, then hang": (escaped(
        "import os\n"
        "for fd in range(64):\n"
        "    try:\n        os.write(fd, b'[\"ok\",\"\",[[true,4],[true,3],[true,0]]]')\n"
        "    except OSError:\n        pass\n"
        "while True:\n    pass"), {TIMEOUT}),
    "escaped: leave shared memory behind": (escaped(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.shmat.restype = ctypes.c_void_p\n"
        "i = libc.shmget(0, 64 << 20, 0o1600)\n"
        "if i >= 0:\n    p = libc.shmat(i, None, 0)\n    ctypes.memset(p, 1, 64 << 20)\n"
        "    libc.shmdt(ctypes.c_void_p(p))"), {OK, TIMEOUT}),
    "escaped: write forever": (escaped(
        "import os, time\nwhile True:\n    os.write(3, b'[')\n    time.sleep(0.01)"), {TIMEOUT, MALFORMED}),
    "escaped: close the pipe and sleep": (escaped(
        "import os, time\nos.close(3)\ntime.sleep(60)"), {TIMEOUT}),
    "escaped: ignore the CPU timer": (escaped(
        "import signal\nsignal.signal(signal.SIGPROF, signal.SIG_IGN)\nwhile True:\n    pass"), {TIMEOUT}),
    "escaped: raise the limits, then fork": (escaped(
        "import os, resource\n"
        "try:\n    resource.setrlimit(resource.RLIMIT_NPROC, (100, 100))\nexcept (OSError, ValueError):\n    pass\n"
        "while True:\n    os.fork()"), {OK, ERROR, CRASHED, TIMEOUT}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_scores_zero_and_leaves_nothing(name, guarded):
    program, statuses = HOSTILE[name]
    start = time.monotonic()
    results = run_cases([GOOD, fill(program, guarded), GOOD], ["add3"] * 3, [CASES] * 3)
    elapsed = time.monotonic() - start
    assert results[1].status in statuses, results[1]
    assert results[1].pass_rate == 0.0
    assert [results[0].pass_rate, results[2].pass_rate] == [1.0, 1.0], "the batch was spoiled"
    assert elapsed < sandbox._STARTUP_TIMEOUT_S + KILL_AFTER_S + 2.0, "the call outlived its deadlines"
    if results[1].status == TIMEOUT and "wall time" in results[1].detail:  # killed on the caller's clock
        assert KILL_AFTER_S <= float(results[1].detail.split()[2]) < KILL_AFTER_S + 1.0


def test_returned_objects_with_their_own_eq_are_refused_not_compared():
    results = run_cases([HOSTILE["always-equal object, escaped"][0]], ["add3"], [CASES])
    assert results[0].detail == "case 0: returned Any"  # the object was made, and refused


def test_one_batch_of_every_hostile_program(guarded):
    """All hostile programs in one batch, each between two correct ones: zeros and ones."""
    programs = [GOOD]
    for program, _ in HOSTILE.values():
        programs += [fill(program, guarded), GOOD]
    start = time.monotonic()
    results = run_cases(programs, ["add3"] * len(programs), [CASES] * len(programs))
    elapsed = time.monotonic() - start
    assert [r.pass_rate for r in results] == [1.0, 0.0] * len(HOSTILE) + [1.0]
    assert elapsed < 60.0  # a few seconds: the hangs are killed two at a time


def test_the_escape_is_real(guarded):
    """The trick of :func:`escaped` does reach the real builtins (``open``, ``import os``),
    so the hostile programs above that use it test the operating-system layers."""
    program = escaped("import os\nresult = x + 3 + 0 * os.getpid() if callable(open) else None",
                      "return scope['result']")
    assert run_cases([program], ["add3"], [CASES])[0].passed == (True, True, True)


@pytest.mark.parametrize("filter_on", [True, False], ids=["all layers", "without the system-call filter"])
def test_the_os_layers_hold_against_an_escaped_program(guarded, monkeypatch, filter_on):
    """Past the Python-level layers, each OS layer the system reports refuses what it should;
    the escaped program says what the kernel answered, and the answers are checked here. With
    the system-call filter on, it answers first (EPERM); without it, the layers behind it do
    (a read-only filesystem: EROFS; no new processes: EAGAIN). Landlock is switched off here,
    since the probes read /proc/self/status, which it refuses; it has a test of its own."""
    import errno

    if not os.path.isdir("/proc/self"):
        pytest.skip("reads /proc")
    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", ("no file access",) + (() if filter_on else ("system-call filter",)))
    sandbox.stop()
    layers = sandbox.layers()
    seccomp = "system-call filter" in layers
    assert seccomp == (filter_on and sandbox.zygote.LINUX and os.uname().machine == "x86_64")
    probes = {  # name -> (code leaving its finding in ``result``, the finding expected; None: not here)
        "write": ("import os\ntry:\n    os.close(os.open('MARKER_PATH', os.O_WRONLY | os.O_CREAT))\n"
                  "    result = 'written'\nexcept OSError as e:\n    result = e.errno",
                  errno.EPERM if seccomp else (errno.EROFS if "read-only filesystem" in layers else None)),
        "fork": ("import os\ntry:\n    pid = os.fork()\n    result = 'forked'\n    if pid == 0:\n"
                 "        os._exit(0)\nexcept OSError as e:\n    result = e.errno",
                 errno.EPERM if seccomp else errno.EAGAIN),
        "uid": ("import os\nresult = os.getuid()", 65534 if os.geteuid() == 0 else (
            0 if "user namespace" in layers else os.geteuid())),
        "pid": ("import os\nresult = os.getpid()", 1 if "PID namespace per candidate" in layers else None),
        "capabilities": ("result = int(open('/proc/self/status').read().split('CapEff:')[1].split()[0], 16)", 0),
        "no new privileges": ("result = open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0]",
                              "1" if "no new privileges" in layers else None),
        "seccomp": ("result = open('/proc/self/status').read().split('Seccomp:')[1].split()[0]",
                    "2" if seccomp else "0"),
        "limits": ("import resource\nresult = [resource.getrlimit(r) for r in (resource.RLIMIT_NPROC, "
                   "resource.RLIMIT_FSIZE)]", [(0, 0), (0, 0)]),
    }
    wanted = {k: v for k, v in probes.items() if v[1] is not None}
    results = findings([code for code, _ in wanted.values()], [answer for _, answer in wanted.values()], guarded)
    assert {k: r.passed for k, r in zip(wanted, results)} == {k: (True,) for k in wanted}, results


#: The layers of the operating system that tests switch off, to show that another holds alone.
OS_LAYERS = ("network namespace", "IPC namespace", "IPC namespace per candidate", "read-only filesystem",
             "PID namespace per candidate", "resource limits", "unprivileged uid", "system-call filter",
             "no file access")


def keep_only(monkeypatch, layer: str) -> None:
    """Switch off every OS layer but ``layer`` (the next call starts a zygote without them)."""
    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", tuple(name for name in OS_LAYERS if name != layer))
    sandbox.stop()


def errno_of(statement: str) -> str:
    """Code for :func:`escaped` that runs ``statement`` and leaves in ``result`` the error number
    the kernel answered, or ``'done'``."""
    return f"import os\ntry:\n    {statement}\n    result = 'done'\nexcept OSError as e:\n    result = e.errno"


def findings(probes: list, answers: list, guard: SimpleNamespace) -> list:
    """Run each probe as an escaped candidate that returns its ``result``, with the answer it
    should have found as its one case."""
    programs = [fill(escaped(code, "return scope['result']"), guard) for code in probes]
    return run_cases(programs, ["add3"] * len(programs), [[((0,), answer)] for answer in answers])


def test_the_system_call_filter_holds_on_its_own(guarded, monkeypatch):
    """Every other OS layer switched off (the candidate even stays root, when the caller is):
    the filter alone refuses signals, new processes, file changes and sockets. The probes are
    harmless should it fail: signal 0, a file in the bait directory, a child that exits."""
    import errno

    if not (sandbox.zygote.LINUX and os.uname().machine == "x86_64"):
        pytest.skip("the filter is for x86_64 Linux")
    keep_only(monkeypatch, "system-call filter")
    assert "system-call filter" in sandbox.layers()
    probes = [errno_of("os.kill(CALLER_PID, 0)"),
              errno_of("os.close(os.open('BAIT_PATH/new.txt', os.O_WRONLY | os.O_CREAT))"),
              errno_of("os.unlink('KEEP_PATH')"),
              errno_of("os.rename('KEEP_PATH', 'BAIT_PATH/moved.txt')"),
              errno_of("os._exit(0) if os.fork() == 0 else None"),
              errno_of("os.execv('/bin/true', ['true'])"),
              "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "result = 'done' if libc.socket(2, 1, 0) >= 0 else ctypes.get_errno()",
              "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "result = 'done' if libc.shmget(0, 4096, 0o1600) >= 0 else ctypes.get_errno()",
              "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "result = 'done' if libc.mq_open(b'/q', 0o100 | 2, 0o600, None) >= 0 else ctypes.get_errno()",
              "result = len(open('KEEP_PATH').read())"]  # reading is allowed
    answers = [errno.EPERM] * 9 + [len("keep me")]
    results = findings(probes, answers, guarded)
    assert [r.passed for r in results] == [(True,)] * len(probes), results


def test_landlock_holds_on_its_own(guarded, monkeypatch):
    """Every other OS layer switched off (the candidate even stays root, when the caller is, with
    its capabilities): Landlock alone refuses opening any file or directory, for reading,
    writing or executing, the caller's memory included; what was open before stays usable (the
    message pipe). The probes are harmless should it fail."""
    import errno

    keep_only(monkeypatch, "no file access")
    if not active("no file access"):
        pytest.skip("this kernel has no Landlock")
    probes = [errno_of("open('KEEP_PATH').read()"), errno_of("os.listdir('/')"),
              errno_of("os.close(os.open('BAIT_PATH/new.txt', os.O_WRONLY | os.O_CREAT))"),
              errno_of("os.unlink('KEEP_PATH')"), errno_of("open('/proc/CALLER_PID/mem', 'rb').read(1)"),
              errno_of("os.execv('/bin/true', ['true'])")]
    results = findings(probes, [errno.EACCES] * len(probes), guarded)
    assert [r.passed for r in results] == [(True,)] * len(probes), results


def test_no_network_for_an_escaped_program(guarded, monkeypatch):
    """With the system-call filter and Landlock switched off (they refuse sockets and TCP), the
    network namespace alone: a connection to a server of this process gets "network unreachable"."""
    import errno

    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", ("system-call filter", "no file access"))
    sandbox.stop()
    if not active("network namespace"):
        pytest.skip("this system offers no network namespace")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        # socket is not importable as nobody everywhere (a Python under /root); ctypes is loaded
        code = ("import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                "s = libc.socket(2, 1, 0)\n"
                f"address = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\n"
                "address = struct.pack('=H', 2) + address[2:]\n"
                "result = ctypes.get_errno() if libc.connect(s, address, 16) else 'connected'")
        result = run_cases([escaped(code, "return scope['result']")], ["add3"], [[((0,), errno.ENETUNREACH)]])[0]
        assert result.passed == (True,), result  # it tried, and the kernel said: network unreachable
        with pytest.raises(BlockingIOError):
            server.accept()


def test_forged_messages_reach_no_other_candidate(guarded):
    """A candidate writes passing messages on every descriptor it has, then hangs: it times out,
    and a wrong candidate after it still fails (each has a pipe of its own)."""
    forger = fill(HOSTILE["escaped: forge a passing message, then hang"][0], guarded)
    wrong = body("return x")
    results = run_cases([forger, wrong, GOOD, wrong], ["add3"] * 4, [CASES] * 4)
    assert [r.status for r in results] == [TIMEOUT, OK, OK, OK]
    assert [r.pass_rate for r in results] == [0.0, 0.0, 1.0, 0.0]


MALFORMED_MESSAGES = {  # name -> a Python expression for the bytes an escaped candidate writes
    "not JSON": "b'ok 4 3 0'",
    "not UTF-8": "b'\\xff\\xfe['",
    "wrong shape": "b'{\"status\": \"ok\"}'",
    "unknown status": "b'[\"passed\",\"\",[[true,4],[true,3],[true,0]]]'",
    "too few outputs": "b'[\"ok\",\"\",[[true,4]]]'",
    "too many outputs": "b'[\"ok\",\"\",[[true,4],[true,3],[true,0],[true,0]]]'",
    "bad output entry": "b'[\"ok\",\"\",[[1,4],[true,3],[true,0]]]'",
    "bad value tag": "b'[\"ok\",\"\",[[true,{\"set\":[4]}],[true,3],[true,0]]]'",
    "unhashable key": "b'[\"ok\",\"\",[[true,{\"dict\":[[[1],2]]}],[true,3],[true,0]]]'",
    "deep nesting": "b'[\"ok\",\"\",[[true,' + b'[' * 100000 + b']' * 100000 + b'],[true,3],[true,0]]]'",
    "huge integer": "b'[\"ok\",\"\",[[true,' + b'9' * 10000 + b'],[true,3],[true,0]]]'",
    "over the size limit": f"b'[\"ok\",\"' + b'x' * {sandbox.MAX_MESSAGE_BYTES + 10} + b'\",[]]'",
    "two messages": "b'[\"ok\",\"\",[[true,4],[true,3],[true,0]]][\"ok\",\"\",[]]'",
}


def test_malformed_messages_score_zero_and_never_raise(guarded):
    """Messages written by an escaped candidate, which then exits normally: each scores zero
    with status ``malformed``; the correct candidates around them score 1."""
    programs = [GOOD]
    for message in MALFORMED_MESSAGES.values():
        code = f"import os\ndata = {message}\nwhile data:\n    data = data[os.write(3, data):]\nos._exit(0)"
        programs += [escaped(code), GOOD]
    results = run_cases(programs, ["add3"] * len(programs), [CASES] * len(programs))
    assert [r.pass_rate for r in results] == [1.0, 0.0] * len(MALFORMED_MESSAGES) + [1.0]
    assert {name: r.status for name, r in zip(MALFORMED_MESSAGES, results[1::2])} == {
        name: MALFORMED for name in MALFORMED_MESSAGES}


def test_a_message_is_decoded_strictly():
    """The decoder on its own: every malformed message is ``malformed`` (it never raises), a
    well-formed one gives back the values, a claimed failure is a zero."""
    for expression in MALFORMED_MESSAGES.values():
        message = eval(expression)
        overflow = len(message) > sandbox.MAX_MESSAGE_BYTES  # the zygote cuts such a message off
        status, _, _ = sandbox._outcome(0, int(overflow), message[:sandbox.MAX_MESSAGE_BYTES], 3)
        assert status == MALFORMED, message[:60]
    good = b'["ok","",[[true,{"tuple":[1,[2.5,null]]}],[false,"ZeroDivisionError"],[true,{"dict":[["a",true]]}]]]'
    assert sandbox._outcome(0, 0, good, 3) == (OK, "", [(True, (1, [2.5, None])), (False, "ZeroDivisionError"),
                                                        (True, {"a": True})])
    assert sandbox._outcome(0, 0, b'["memory","MemoryError",[]]', 3)[0] == MEMORY
    assert sandbox._outcome(0, 0, b"", 3) == (MALFORMED, "no message", [])
    assert sandbox._outcome(sandbox.zygote.CPU_EXIT, 0, b"", 3) == (TIMEOUT, "CPU time limit", [])
    assert sandbox._outcome(-9, 0, b"", 3) == (CRASHED, "died of SIGKILL", [])


def test_candidates_do_not_share_classes_modules_or_builtins(guarded):
    """What one candidate patches (a class inside an allowed module, a module, a builtin) is
    gone for the next: each runs in a fresh process."""
    patch_class = body("import collections\ncollections.Counter.elements = lambda self: iter([0])\nreturn x + 3")
    uses_class = body("import collections\nreturn sum(collections.Counter({x + 3: 1}).elements())")
    patch_module = body("import math\nmath.pi = 3\nreturn x + 3")
    reads_module = body("import math\nreturn x + 3 if math.pi > 3.14 else 0")
    shadow = body("global sorted\nsorted = lambda v: v\nreturn x + 3")
    uses_builtin = body("return sorted([x + 3, -100])[1]")
    programs = [patch_class, uses_class, patch_module, reads_module, shadow, uses_builtin]
    results = run_cases(programs, ["add3"] * len(programs), [CASES] * len(programs))
    assert [r.pass_rate for r in results] == [1.0] * len(programs)


SHARED_MEMORY = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 "i = libc.shmget({key}, 1 << 20, {flags})\nresult = 'found' if i >= 0 else ctypes.get_errno()")


def test_shared_memory_dies_with_its_candidate(guarded, monkeypatch):
    """With the system-call filter switched off (it refuses System V IPC), a candidate makes a
    shared-memory segment, which in a shared IPC namespace would outlive it (memory left behind
    for the zygote's whole life, and a channel to later candidates); the next candidate, of the
    next batch, finds no such segment: it died with its maker's IPC namespace."""
    import errno

    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", ("system-call filter",))
    sandbox.stop()
    if not active("IPC namespace per candidate"):
        pytest.skip("this system offers no IPC namespaces")
    key = 0x6D70_0000 + os.getpid() % 0xFFFF
    make, find = (escaped(SHARED_MEMORY.format(key=key, flags=flags), "return scope['result']")
                  for flags in (0o1666, 0o666))  # IPC_CREAT | rw for all; then only look it up
    assert run_cases([make], ["add3"], [[((0,), "found")]])[0].passed == (True,)  # it was made
    assert run_cases([find], ["add3"], [[((0,), errno.ENOENT)]])[0].passed == (True,)  # and is gone


def test_everything_a_candidate_starts_dies_with_it(guarded, monkeypatch):
    """With the resource limits and the system-call filter switched off (so that fork works),
    an escaped candidate starts a process in a new session that sleeps; when the candidate
    returns, its PID namespace ends that process."""
    if not active("PID namespace per candidate"):
        pytest.skip("this system offers no PID namespaces")
    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", ("resource limits", "system-call filter"))
    sandbox.stop()
    code = ("import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(30)\n"
            "    os._exit(0)\nresult = 'forked'")
    result = run_cases([escaped(code, "return scope['result']")], ["add3"], [[((0,), "forked")]])[0]
    assert result.passed == (True,), result  # it did fork
    assert candidate_leftovers() == set()  # the sleeper died with the candidate


def test_without_pid_namespaces_the_process_group_dies(guarded, monkeypatch):
    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", ("resource limits", "PID namespace per candidate",
                                                      "system-call filter"))
    sandbox.stop()
    assert "PID namespace per candidate" not in sandbox.layers()
    code = "import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(30)\n    os._exit(0)\nresult = 'forked'"
    result = run_cases([escaped(code, "return scope['result']")], ["add3"], [[((0,), "forked")]])[0]
    assert result.passed == (True,), result
    assert candidate_leftovers() == set()  # the 30-s sleeper was killed with its group


def test_without_namespaces_the_sandbox_still_runs_and_says_so(guarded, monkeypatch, capsys):
    """A container that forbids namespaces, emulated by switching them off: candidates still run
    one per process, with the layers that remain, and the notice names the missing ones."""
    namespaces = ("network namespace", "IPC namespace", "IPC namespace per candidate", "read-only filesystem",
                  "PID namespace per candidate")
    monkeypatch.setattr(sandbox, "_DISABLED_LAYERS", namespaces)
    monkeypatch.setattr(sandbox, "_ANNOUNCED", None)
    sandbox.stop()
    names = sandbox.layers()
    assert not set(namespaces) & set(names) and "process per candidate" in names
    if sys.platform.startswith("linux"):
        assert "parent-death signal" in names  # what ends a candidate's processes now
    notice = capsys.readouterr().err
    assert all(f"{name} (switched off)" in notice for name in namespaces), notice
    import errno

    fork = escaped("import os\ntry:\n    os.fork()\n    result = 'forked'\nexcept OSError as e:\n    result = e.errno",
                   "return scope['result']")
    uid = escaped("import os\nresult = os.getuid()", "return scope['result']")
    refused = errno.EPERM if "system-call filter" in names else errno.EAGAIN  # the filter, else RLIMIT_NPROC
    uid_inside = 65534 if os.geteuid() == 0 else (0 if "user namespace" in names else os.geteuid())
    results = run_cases([GOOD, fork, uid], ["add3"] * 3, [CASES, [((0,), refused)], [((0,), uid_inside)]])
    assert [r.passed for r in results] == [(True, True, True), (True,), (True,)], results


def test_a_timeout_kills_only_its_candidate(guarded):
    hang = HOSTILE["stuck in C"][0]
    results = run_cases([GOOD, hang, GOOD, hang, GOOD], ["add3"] * 5, [CASES] * 5, timeout_s=0.1, kill_grace_s=0.3)
    assert [r.pass_rate for r in results] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert results[1].status == TIMEOUT and "wall time" in results[1].detail
    pids = zygote_pids()
    assert run_cases([GOOD], ["add3"], [CASES])[0].pass_rate == 1.0 and zygote_pids() == pids  # the same zygote


def test_an_interrupted_batch_leaves_nothing_half_served(guarded, monkeypatch):
    """Ctrl-C in a notebook while a batch runs: the zygote is ended, and the next batch gets a
    new one and its own results (not the interrupted batch's)."""
    real, calls = sandbox._read_frames, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    sandbox.layers()
    monkeypatch.setattr(sandbox, "_read_frames", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_cases([body("x = 0\nwhile True:\n    x = x + 1") + "\n# " + uuid.uuid4().hex] * 3, ["add3"] * 3,
                  [CASES] * 3)
    assert sandbox_processes() == []  # the zygote and its candidates are gone
    monkeypatch.setattr(sandbox, "_read_frames", real)
    wrong = body("return x") + "\n# " + uuid.uuid4().hex
    assert [r.pass_rate for r in run_cases([wrong, GOOD], ["add3"] * 2, [CASES] * 2)] == [0.0, 1.0]


def test_batch_time_limit_bounds_the_call(guarded):
    hang = HOSTILE["stuck in C"][0]
    sandbox.layers()  # start the zygote outside the timed call
    start = time.monotonic()
    results = run_cases([hang] * 20, ["add3"] * 20, [CASES] * 20, timeout_s=0.1, kill_grace_s=0.2, batch_timeout_s=1.0)
    assert time.monotonic() - start < 3.0
    assert all(r.status == TIMEOUT for r in results)
    assert results[-1].detail == "batch time limit"


def test_a_batch_of_64_distinct_programs():
    """The batch that benchmarks/sandbox_speed.py times (its figures are in the README): 64
    programs, each new to the sandbox, 4 cases each; every one scored on its own cases."""
    variants = [GOOD, body("return x + 2"), body("return 3 + x"), body("y = x + 3\nreturn y")]
    programs = [variants[i % 4] + "\n# " + uuid.uuid4().hex for i in range(64)]  # all new
    results = run_cases(programs, ["add3"] * 64, [CASES + [((10,), 13)]] * 64)
    assert [r.status for r in results] == [OK] * 64
    assert [r.passed for r in results] == [(True,) * 4, (False,) * 4, (True,) * 4, (True,) * 4] * 16


def test_layers_are_reported_once(capsys, monkeypatch):
    monkeypatch.setattr(sandbox, "_ANNOUNCED", None)
    sandbox.stop()
    names = sandbox.layers()
    assert {"static guard", "restricted builtins", "process per candidate", "CPU timer",
            "wall-clock deadline"} <= set(names)
    if sys.platform.startswith("linux") and os.geteuid() == 0:
        assert "unprivileged uid" in names  # root (as in CI) always drops to nobody
    run_cases([GOOD], ["add3"], [CASES])
    sandbox.stop()
    run_cases([GOOD], ["add3"], [CASES])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("minippo sandbox layers")]
    assert len(lines) == 1 and all(name in lines[0] for name in names), lines


def test_static_guard():
    assert sandbox.static_guard(GOOD) is None
    assert sandbox.static_guard(body("for _ in range(3):\n    x += 1\nreturn x")) is None
    assert sandbox.static_guard(body("import math\nreturn math.sqrt(x)")) is None
    assert sandbox.static_guard("def f(:") is None  # not parsing is run_cases' "error", not a refusal
    for program in [body("return x.__class__"), body("return math._private"), body("from os import path"),
                    body("import math as __m"), "def __eq__(a, b):\n    return True",
                    body("match x:\n    case object(__class__=c):\n        return c"),
                    body("return getattr(x, 'real')"), "x" * 30_000]:
        assert sandbox.static_guard(program) is not None, program


def test_bad_arguments():
    with pytest.raises(ValueError, match="same length"):
        run_cases([GOOD], ["add3"], [])
    with pytest.raises(ValueError, match=r"timeout_s must be in \(0, 60.0\]"):
        run_cases([GOOD], ["add3"], [CASES], timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_cases([GOOD], ["add3"], [CASES], memory_mb=8)
    with pytest.raises(ValueError, match="got a str"):
        run_cases(GOOD, ["add3"], [CASES])
    with pytest.raises(ValueError, match=r"programs\[0\] must be the program's source text"):
        run_cases([b"def add3(x): return x"], ["add3"], [CASES])
    with pytest.raises(ValueError, match=r"function_names\[0\]"):
        run_cases([GOOD], ["add 3"], [CASES])
    with pytest.raises(ValueError, match=r"cases\[0\] must be a list"):
        run_cases([GOOD], ["add3"], ["assert add3(1) == 4"])
    with pytest.raises(ValueError, match=r"cases\[0\]\[1\] must be an \(args, expected\) pair"):
        run_cases([GOOD], ["add3"], [[((1,), 4), (1, 4, 5)]])
    with pytest.raises(ValueError, match=r"cases\[0\]\[0\]: args must be a tuple"):
        run_cases([GOOD], ["add3"], [[(1, 4)]])
    with pytest.raises(ValueError, match=r"cases\[0\]\[0\]: expected must be plain data"):
        run_cases([GOOD], ["add3"], [[((1,), {4})]])
    with pytest.raises(ValueError, match=r"cases\[0\]\[0\]: args must be a tuple of plain data"):
        run_cases([GOOD], ["add3"], [[((object(),), 4)]])
    assert run_cases([], [], []) == []


def test_candidates_never_run_in_this_process():
    """Patching this process's math does not reach a candidate; neither do this process's
    environment variables."""
    import math

    os.environ["MINIPPO_SECRET_FOR_TEST"] = "1"
    original = math.pi
    try:
        math.pi = 3
        result = run_cases([body("import math\nreturn x + 3 if math.pi > 3.14 else 0")], ["add3"], [CASES])[0]
        env = run_cases([escaped("import os\nresult = [k for k in os.environ if 'SECRET' in k]",
                                 "return scope['result']")], ["add3"], [[((0,), [])]])[0]
    finally:
        math.pi = original
        del os.environ["MINIPPO_SECRET_FOR_TEST"]
    assert result.pass_rate == 1.0 and env.pass_rate == 1.0
