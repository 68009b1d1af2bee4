"""The grading kernel: the process a student's code runs in, and the record it sends back.

:mod:`minippo.grade` never runs a student's code in its own process. For each submitted notebook
it starts a kernel, :func:`run`, as a child of a ``multiprocessing`` fork server that has
imported torch, minippo and IPython and done nothing else (a fork costs a fraction of a second;
a fresh interpreter would spend ~2.5 CPU seconds importing). The kernel

1. moves into its own session (so that one ``killpg`` reaches whatever it starts), an empty
   temporary working directory and a short environment (no tokens of the instructor's), sends
   stdout to /dev/null, and limits itself: address space (``RLIMIT_AS``), file size
   (``RLIMIT_FSIZE``), CPU time (``RLIMIT_CPU``, a backstop should the grader die), no core
   files;
2. runs the chapter's setup cell in an IPython shell (so ``%magics`` work as in Jupyter) and
   reports ``ready``;
3. for each exercise reports ``start``, runs the student's cells, then calls the chapter's
   checker -- with a :class:`Recorder` standing in for every function the checker takes --
   and reports ``done`` with the record: the errors the cells raised, which functions are
   missing, and every call the checker made (inputs, output, inputs after the call, and for a
   scalar loss its gradient with respect to the inputs that require one).

The grader's clock does the rest: an exercise that overruns its time is killed with its kernel.

**The verdict is not made here.** Whatever the kernel's checker says is ignored: the student's
cells ran in this process and may have replaced ``mp.checks``, the reference implementations or
torch itself. The grader runs the pristine checker in its own process with a :class:`Replay`
in place of the student's function, which answers each call with the recorded answer after
checking that the call is the one that was recorded. A kernel whose checker was tampered with
records different calls, or none, and the replay reports it; whatever answers a kernel records,
the pristine checker judges them against the pristine reference on its own cases, so passing
takes right answers. The one way to get them without solving the exercise is open in the
notebook too: calling the package's reference from the student's function.

Each message on the pipe is ``kind index`` and a newline, then for ``done`` a
:func:`torch.save` of plain data (tensors, numbers, strings, lists, dicts) that the grader reads
with ``torch.load(weights_only=True)``, which refuses to build arbitrary objects, so a record
cannot run code in the grader. Student values are turned into such data by :func:`encode` and
back by :func:`decode`; anything else (a dict, a student's class) becomes an opaque stand-in
with the original type's name, which is all a checker's message uses.
"""
from __future__ import annotations

import io
import math
import os
import resource
import signal
import sys

import numpy as np
import torch
from torch import Tensor

#: largest record the grader accepts for one exercise
MAX_RECORD_BYTES = 64 * 2**20
_MAX_DEPTH = 20


# ============================================================================ student values
def encode(x, depth: int = 0):
    """A student's value as plain data that ``torch.load(weights_only=True)`` accepts."""
    if depth > _MAX_DEPTH:
        return _opaque(x)
    if isinstance(x, Tensor):
        return _plain_tensor(x)
    if isinstance(x, np.generic):  # numpy scalars: the Python number they hold
        x = x.item()
    if x is None or isinstance(x, str):
        return None if x is None else str(x)
    for number in (bool, int, float):  # in this order: a bool is an int too
        if isinstance(x, number):
            try:
                return number(x)  # a subclass's own conversion may raise
            except Exception:
                return _opaque(x)
    if isinstance(x, (tuple, list)):
        kind = "tuple" if isinstance(x, tuple) else "list"
        return {"__kind__": kind, "items": [encode(v, depth + 1) for v in x]}
    if isinstance(x, np.ndarray) and x.dtype != object:
        try:
            return {"__kind__": "ndarray", "value": torch.from_numpy(np.array(x, copy=True))}
        except (TypeError, ValueError):  # a dtype torch has no counterpart for
            return _opaque(x)
    return _opaque(x)


def _plain_tensor(x: Tensor):
    try:
        t = x.detach()
        if type(t) is not Tensor:
            t = t.as_subclass(Tensor)
        if t.is_quantized:
            t = t.dequantize()
        if t.layout != torch.strided:
            t = t.to_dense()
        return t.resolve_conj().resolve_neg().cpu().clone()
    except Exception:
        return _opaque(x)


def _opaque(x):
    try:
        text = repr(x)[:200]
    except Exception:
        text = f"<{type(x).__name__}>"
    return {"__kind__": "opaque", "type": type(x).__name__, "repr": text}


def decode(x):
    """The value :func:`encode` described (an opaque value: an object of a same-named class)."""
    if not isinstance(x, dict):
        return x
    kind = x.get("__kind__")
    if kind == "tuple":
        return tuple(decode(v) for v in x["items"])
    if kind == "list":
        return [decode(v) for v in x["items"]]
    if kind == "ndarray":
        return x["value"].numpy()
    text = str(x.get("repr", ""))
    return type(str(x.get("type", "object")), (), {"__repr__": lambda self: text})()


def same(a, b) -> bool:
    """Whether two encoded values are identical (NaN equals NaN)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and bool((a.eq(b) | (a.ne(a) & b.ne(b))).all()))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def describe_exception(err: BaseException) -> dict:
    """What the grader needs to re-raise a student's exception: its class name and message."""
    try:
        message = str(err)[:1000]
    except Exception:
        message = ""
    return {"type": type(err).__name__, "message": message,
            "not_implemented": isinstance(err, NotImplementedError)}


def student_exception(description: dict) -> Exception:
    """An exception with the recorded class name and message (a NotImplementedError stays one)."""
    base = NotImplementedError if description.get("not_implemented") else Exception
    cls = type(str(description.get("type", "Exception")), (base,), {"__module__": "submission"})
    return cls(str(description.get("message", "")))


# ============================================================================ recording and replay
class Recorder:
    """Stands in for a student's function in the kernel: calls it and records every call."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[dict] = []

    def __call__(self, *args, **kwargs):
        record = {"args": encode(list(args)), "kwargs": encode(sorted(kwargs.items()))}
        self.calls.append(record)
        try:
            out = self.fn(*args, **kwargs)
        except BaseException as err:
            record["error"] = describe_exception(err)
            record["after"] = encode(list(args))
            raise
        record["after"] = encode(list(args))
        record["output"] = encode(out)
        record["grads"] = _loss_gradients(out, args)
        return out


def _loss_gradients(out, args) -> dict | None:
    """For a scalar output that autograd can differentiate: its gradient with respect to each
    input that requires one (what ``checks._loss_and_grad`` compares), or the error autograd
    raised. None otherwise."""
    wrt = [a for a in args if isinstance(a, Tensor) and a.requires_grad]
    if not (wrt and isinstance(out, Tensor) and out.requires_grad and out.dim() == 0):
        return None
    try:
        grads = torch.autograd.grad(out, wrt, allow_unused=True, retain_graph=True)
    except Exception as err:
        return {"error": describe_exception(err)}
    return {"grads": [None if g is None else _plain_tensor(g) for g in grads]}


class ReplayMismatch(BaseException):
    """The grader's checker made a call the kernel did not record: the kernel's checker did
    something else (a BaseException, so that the checker does not report it as the student's
    function raising)."""


class _RecordedLoss(torch.autograd.Function):
    """A recorded scalar whose gradient, for autograd, is the recorded gradient."""

    @staticmethod
    def forward(ctx, value, grads, *wrt):
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx, grad_out):
        if "error" in ctx.grads:
            raise student_exception(ctx.grads["error"])
        return (None, None, *[None if g is None else (grad_out * g).to(g.dtype)
                              for g in ctx.grads["grads"]])


class Replay:
    """Stands in for a student's function in the grader: answers each call with the kernel's
    recorded answer, after checking that the inputs are the recorded inputs."""

    def __init__(self, name: str, calls: list[dict]):
        self.name, self.calls, self.position = name, calls, 0

    def __call__(self, *args, **kwargs):
        if self.position >= len(self.calls):
            raise ReplayMismatch(
                f"the student's kernel called {self.name} {len(self.calls)} times, the checker "
                f"needs more: did the notebook change minippo.checks or a reference in minippo?")
        record = self.calls[self.position]
        self.position += 1
        if not (same(encode(list(args)), record.get("args"))
                and same(encode(sorted(kwargs.items())), record.get("kwargs"))):
            raise ReplayMismatch(
                f"call {self.position} of {self.name} in the student's kernel had other inputs "
                f"than the checker's: did the notebook change minippo.checks or its cases?")
        _restore(args, decode(record.get("after")))
        if "error" in record:
            raise student_exception(record["error"])
        out = decode(record.get("output"))
        grads = record.get("grads")
        wrt = [a for a in args if isinstance(a, Tensor) and a.requires_grad]
        if grads is not None and isinstance(out, Tensor) and wrt:
            if "grads" in grads and len(grads["grads"]) != len(wrt):
                raise ReplayMismatch(f"the recorded gradient of {self.name} does not fit its inputs")
            out = _RecordedLoss.apply(out, grads, *wrt)
        return out

    @property
    def not_implemented(self) -> bool:
        """True if the first call raised NotImplementedError (the stub was never filled in)."""
        first = self.calls[0] if self.calls else {}
        return self.position == 1 and bool(first.get("error", {}).get("not_implemented"))


def _restore(args, after) -> None:
    """Give the grader's inputs the values the student's function left in the kernel's inputs
    (so the checker sees an in-place modification)."""
    if not isinstance(after, list):
        return
    with torch.no_grad():
        for arg, value in zip(args, after):
            if (isinstance(arg, Tensor) and isinstance(value, Tensor) and not arg.requires_grad
                    and not same(arg.detach(), value)):
                arg.data = value


# ============================================================================ the kernel process
def _limit(memory_bytes: int, file_bytes: int, cpu_seconds: int) -> None:
    """Limits this process sets on itself before any student code runs."""
    for which, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_FSIZE, file_bytes),
                         (resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_CORE, 0)):
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):  # e.g. macOS refuses RLIMIT_AS; the grader's clock still holds
            pass
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails, not kills


def _shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # no history database in the working directory
    return InteractiveShell.instance(config=config)


def _run_exercise(shell, exercise: dict) -> dict:
    """Run one exercise's cells, then (if asked) its checker with recorders; return the record."""
    names_before = set(shell.user_ns)
    errors = []
    if exercise["run"]:
        for source in exercise["cells"]:
            result = shell.run_cell(source, store_history=False)
            err = result.error_before_exec or result.error_in_exec
            if err is not None:
                errors.append(describe_exception(err))
    record = {"cell_errors": errors,
              "new_functions": sorted(name for name in set(shell.user_ns) - names_before
                                      if not name.startswith("_") and callable(shell.user_ns[name]))}
    if not exercise["record"]:
        return record
    functions = {name: shell.user_ns.get(name) for name in exercise["functions"]}
    record["missing"] = [name for name, fn in functions.items() if not callable(fn)]
    if record["missing"]:
        return record
    recorders = {name: Recorder(fn) for name, fn in functions.items()}
    try:
        checker = getattr(sys.modules["minippo.checks"], exercise["checker"])
        checker(*[recorders[name] for name in exercise["args"]],
                **{key: recorders[name] for key, name in exercise["kwargs"].items()},
                **exercise["constants"])
    except BaseException as err:  # the checker's verdict here is not the grade; keep going
        record["kernel_checker"] = describe_exception(err)
    record["calls"] = {name: recorder.calls for name, recorder in recorders.items()}
    return record


def run(spec: dict, conn, work: str, environment: dict, stderr_path: str) -> None:  # pragma: no cover
    """The kernel: a child of the grader's fork server (which has torch, minippo and IPython
    imported, and nothing else done). Runs in its own session, in ``work``, with its own
    environment, stdout to /dev/null and stderr to ``stderr_path``; reports on ``conn``."""
    os.setsid()  # its own process group, so that the grader's killpg reaches all it starts
    devnull = os.open(os.devnull, os.O_RDWR)
    errors = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((0, devnull), (1, devnull), (2, errors)):
        os.dup2(target, fd)
    os.chdir(work)
    os.environ.clear()
    os.environ.update(environment)
    send_bytes, exit_now = conn.send_bytes, os._exit  # kept before student code can replace them

    def send(kind: str, index: int = -1, payload: object = None) -> None:
        data = b""
        if payload is not None:
            buffer = io.BytesIO()
            try:
                torch.save(payload, buffer)
            except Exception as err:  # something slipped past encode(): report that instead
                buffer = io.BytesIO()
                torch.save({"kernel_error": f"the record could not be saved: {err}"}, buffer)
            data = buffer.getvalue()
        send_bytes(f"{kind} {index}\n".encode() + data)

    _limit(spec["memory_bytes"], spec["file_bytes"], spec["cpu_seconds"])
    import matplotlib

    matplotlib.use("Agg")  # no window, whatever the grader's display
    shell = _shell()
    setup = shell.run_cell(spec["setup"], store_history=False)
    if not setup.success:
        send("setup-error", payload=describe_exception(setup.error_before_exec or setup.error_in_exec))
        exit_now(1)
    send("ready")
    for exercise in spec["exercises"]:
        send("start", exercise["index"])
        send("done", exercise["index"], _run_exercise(shell, exercise))
    sys.stdout.flush()
    exit_now(0)
