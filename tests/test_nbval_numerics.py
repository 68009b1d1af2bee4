"""The root ``conftest.py`` runs every chapter under nbval with other numerics than the book build
(book/how_to_use.md; ``scripts/test.sh``): seed offset 1 and torch's portable kernels.
Checked here by letting nbval execute a one-cell notebook that reports what its kernel sees."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """\
import os, torch, minippo
print("offset", minippo.utils.seed_offset())
print("capability", torch.backends.cpu.get_cpu_capability())
assert minippo.utils.seed_offset() == int(os.environ["EXPECT_OFFSET"])
assert torch.backends.cpu.get_cpu_capability() == os.environ["EXPECT_CAPABILITY"]
"""


def run_probe(tmp_path: Path, expect_offset: int, expect_capability: str, numerics: str | None):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PROBE)])
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MINIPPO_SEED_OFFSET", "ATEN_CPU_CAPABILITY", "MINIPPO_NBVAL_NUMERICS")}
    env.update(EXPECT_OFFSET=str(expect_offset), EXPECT_CAPABILITY=expect_capability,
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    if numerics is not None:
        env["MINIPPO_NBVAL_NUMERICS"] = numerics
    # the repository's conftest as a plugin; the temporary folder as rootdir (no pyproject options)
    cmd = [sys.executable, "-m", "pytest", "-p", "conftest", "--nbval-lax", "-p", "no:cacheprovider",
           "-n0", "-q", "--rootdir", str(tmp_path), str(path)]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def native_capability() -> str:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env={k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_nbval_executes_chapters_shifted_by_one_seed_on_portable_kernels(tmp_path):
    done = run_probe(tmp_path, 1, "DEFAULT", None)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_the_numerics_can_be_overridden(tmp_path):
    done = run_probe(tmp_path, 3, "DEFAULT", "MINIPPO_SEED_OFFSET=3,ATEN_CPU_CAPABILITY=default")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    done = run_probe(tmp_path, 0, native_capability(), "native")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_a_wrong_probe_fails(tmp_path):
    """The probe can fail: expecting offset 2 where nbval runs offset 1 is caught."""
    done = run_probe(tmp_path, 2, "DEFAULT", None)
    assert done.returncode != 0


def test_a_malformed_spec_is_refused(tmp_path):
    done = run_probe(tmp_path, 1, "DEFAULT", "offset one")
    assert done.returncode != 0
    assert "MINIPPO_NBVAL_NUMERICS" in done.stdout + done.stderr
