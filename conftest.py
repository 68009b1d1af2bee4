"""The test suite executes every chapter twice, under two different numerics (issue 10).

* **nbval** (this file): every chapter notebook's kernel starts with the variables in
  :data:`NBVAL_NUMERICS` — by default seed offset 1 and torch's portable kernels
  (``ATEN_CPU_CAPABILITY=default``: no SIMD, other float rounding than the native AVX2/AVX-512
  kernels). Override with ``MINIPPO_NBVAL_NUMERICS``, e.g. ``native`` or
  ``MINIPPO_SEED_OFFSET=2,MKL_CBWR=COMPATIBLE``.
* **the book build** (``tests/test_book.py``): natively, seed offset 0 — the numbers the rendered
  book shows.

A chapter's claims must hold under both (and under the wider matrix of
``scripts/robustness.py``). The variables are set only while nbval starts a notebook's kernel,
so the unit tests in the same worker never see them.
"""
from __future__ import annotations

import os
from collections import defaultdict

import pytest

DEFAULT_NBVAL_NUMERICS = "MINIPPO_SEED_OFFSET=1,ATEN_CPU_CAPABILITY=default"


def parse_numerics(spec: str) -> dict[str, str]:
    """``native`` -> ``{}``; ``NAME=VALUE,NAME=VALUE`` -> a dict (a clear error otherwise)."""
    spec = spec.strip()
    if spec in ("", "native"):
        return {}
    pairs = [item.split("=", 1) for item in spec.split(",")]
    if any(len(p) != 2 or not p[0].strip() for p in pairs):
        raise pytest.UsageError(f"MINIPPO_NBVAL_NUMERICS must be 'native' or NAME=VALUE[,NAME=VALUE...], "
                                f"got {spec!r}")
    return {k.strip(): v.strip() for k, v in pairs}


NBVAL_NUMERICS = parse_numerics(os.environ.get("MINIPPO_NBVAL_NUMERICS", DEFAULT_NBVAL_NUMERICS))


def pytest_report_header(config):
    shown = ", ".join(f"{k}={v}" for k, v in NBVAL_NUMERICS.items()) or "native, seed offset 0"
    return f"notebooks under nbval execute with {shown}; the book build natively, seed offset 0"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """While nbval sets up a notebook (its kernel starts here), export :data:`NBVAL_NUMERICS`."""
    if not str(item.fspath).endswith(".ipynb") or not NBVAL_NUMERICS:
        yield
        return
    saved = {k: os.environ.get(k) for k in NBVAL_NUMERICS}
    os.environ.update(NBVAL_NUMERICS)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----------------------------------------------------------------------------- notebook times
#: The project's budgets: a chapter alone with nbval on an idle 2-core machine (the capstone more).
BUDGET_S = {"08_capstone_rlhf_code": 150.0}
DEFAULT_BUDGET_S = 90.0
_notebook_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    """Add up each notebook's setup, cells and teardown (under xdist: on the controller)."""
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration


def pytest_terminal_summary(terminalreporter):
    """Print every notebook's time in this run beside its budget: a measurement, not a test (the
    budgets are for a chapter alone on an idle machine; here other tests share the CPUs)."""
    if not _notebook_seconds:
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    tr = terminalreporter
    tr.section(f"notebook times under nbval (load average now {load})")
    for path, seconds in sorted(_notebook_seconds.items()):
        stem = os.path.splitext(os.path.basename(path))[0]
        budget = BUDGET_S.get(stem, DEFAULT_BUDGET_S)
        tr.write_line(f"{path:<55} {seconds:6.1f} s   budget {budget:.0f} s"
                      + ("   over budget here" if seconds > budget else ""))
