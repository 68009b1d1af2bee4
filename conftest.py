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
