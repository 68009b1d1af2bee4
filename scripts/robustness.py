"""Run the chapters under other seeds and other numerics: the robustness matrix.

    python scripts/robustness.py                           # every chapter, offsets 0-3, every variant
    python scripts/robustness.py --chapters 05 06 --offsets 0 1 --variants native default
    python scripts/robustness.py --json matrix.json        # also keep every glued number per run

A chapter's closing asserts must hold on any machine and any seed (book/how_to_use.md, "What
your run will and will not reproduce"). This script emulates other machines and seeds on this
one: every chapter is executed top to bottom in a fresh kernel, as nbval executes it, once per
combination of

* a seed offset ``k`` (``MINIPPO_SEED_OFFSET=k`` shifts every seed the chapter uses), and
* a numerics variant: ``native``; ``default`` (``ATEN_CPU_CAPABILITY=default``: torch's portable
  kernels, no SIMD); ``avx2`` (``ATEN_CPU_CAPABILITY=avx2``, where the CPU has AVX2);
  ``mkl`` (``MKL_CBWR=COMPATIBLE``: MKL's conditional-numerical-reproducibility code path).
  Any other variant can be given as ``NAME=VALUE[,NAME=VALUE...]``.

Two notebooks run at a time (``--jobs``), each in its own kernel with one torch thread (the
chapters set it), and with its own empty SFT cache. The report is a table chapter x variant with
one mark per offset (``.`` passed, ``F`` an assert failed, ``E`` another error, ``T`` timed out),
then the first failing assert and its message for each failure, and the wall time.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
VARIANTS = {
    "native": {},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "mkl": {"MKL_CBWR": "COMPATIBLE"},
}
# Variables that select numerics; a run starts from an environment without any of them.
NUMERICS_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MINIPPO_SEED_OFFSET")


def cpu_has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def parse_variant(spec: str) -> tuple[str, dict]:
    """``native`` / ``default`` / ``avx2`` / ``mkl``, or ``NAME=VALUE[,NAME=VALUE...]``."""
    if spec in VARIANTS:
        return spec, VARIANTS[spec]
    try:
        env = dict(item.split("=", 1) for item in spec.split(","))
    except ValueError:
        raise SystemExit(f"--variants: {spec!r} is neither one of {sorted(VARIANTS)} "
                         "nor NAME=VALUE[,NAME=VALUE...]") from None
    return spec, env


def find_chapters(prefixes: list[str] | None) -> list[Path]:
    if not prefixes:
        return CHAPTERS
    chosen = [p for p in CHAPTERS if any(p.stem.startswith(x) or p.name == x for x in prefixes)]
    if not chosen:
        raise SystemExit(f"--chapters: no chapter matches {prefixes}; have {[p.stem for p in CHAPTERS]}")
    return chosen


def glued_values(nb) -> dict:
    """``{name: value}`` of every ``mp.glue`` output (myst-nb stores a ``scrapbook`` name)."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:
                data = o.get("data", {})  # keys carry myst-nb's prefix when display=False
                text = next((v for mime in ("text/markdown", "text/plain")
                             for k, v in data.items() if k.endswith(mime)), "")
                try:
                    out[name] = json.loads(text)
                except ValueError:
                    out[name] = text
    return out


def first_error(nb) -> tuple[str, str] | None:
    """``(kind, message)`` of the first cell that raised, with the failing cell's first line."""
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                kind = "F" if o["ename"] == "AssertionError" else "E"
                return kind, f"cell {i}: {o['ename']}: {o['evalue']}".strip()
    return None


def execute(path: Path, timeout_s: int) -> dict:
    """Execute ``path`` in a fresh kernel (which inherits this process's environment); never raises."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start, status = time.perf_counter(), None
    try:
        client.execute()
    except CellTimeoutError as e:
        status = ("T", f"timed out: {str(e).splitlines()[0]}")
    except DeadKernelError as e:
        status = ("E", f"kernel died: {e}")
    except CellExecutionError:
        pass  # the error is in the outputs; first_error reads it
    seconds = time.perf_counter() - start
    status = status or first_error(nb) or (".", "")
    return {"chapter": path.stem, "seconds": round(seconds, 1), "mark": status[0],
            "message": status[1], "glue": glued_values(nb)}


def run_one(path: Path, variant_env: dict, offset: int, timeout_s: int) -> dict:
    """Execute ``path`` in a child process whose environment is ``variant_env`` plus the seed
    offset and an empty SFT cache, so torch in the kernel sees them from its start
    (``ATEN_CPU_CAPABILITY`` is read when torch loads)."""
    env = {k: v for k, v in os.environ.items() if k not in NUMERICS_VARIABLES}
    env.update(variant_env)
    env["MINIPPO_SEED_OFFSET"] = str(offset)
    env["MINIPPO_MYST_GLUE"] = "1"  # mp.glue writes myst-nb's outputs, which glued_values reads
    with tempfile.TemporaryDirectory(prefix="minippo-robustness-") as cache:
        env["MINIPPO_CACHE"] = cache  # an empty SFT cache, as on a fresh machine
        cmd = [sys.executable, __file__, "--one", str(path), "--timeout", str(timeout_s)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"chapter": path.stem, "seconds": 0.0, "mark": "E",
                "message": f"runner failed: {tail[0]}", "glue": {}}
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"offset": offset}


def format_table(results: list[dict], chapters: list[Path], variants: list[str], offsets: list[int]) -> str:
    width = max(len(v) for v in variants) + 2
    cell = max(width, len(offsets) + 2)
    head = "chapter".ljust(36) + "".join(v.ljust(cell) for v in variants)
    lines = [head, "-" * len(head)]
    by_key = {(r["chapter"], r["variant"], r["offset"]): r for r in results}
    for path in chapters:
        row = path.stem.ljust(36)
        for v in variants:
            row += "".join(by_key[(path.stem, v, k)]["mark"] if (path.stem, v, k) in by_key else "?"
                           for k in offsets).ljust(cell)
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapters", nargs="*", help="chapter numbers or names (default: all)")
    parser.add_argument("--offsets", nargs="*", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--variants", nargs="*", default=None,
                        help="native, default, avx2, mkl or NAME=VALUE[,...] (default: all that apply)")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at a time (default 2)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    parser.add_argument("--json", type=Path, help="write every run (marks, times, glued numbers) here")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:  # the child: run one notebook, print one JSON line
        print(json.dumps(execute(args.one, args.timeout)))
        return 0
    if any(k < 0 for k in args.offsets):
        parser.error("--offsets must be non-negative integers")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    specs = args.variants or [v for v in VARIANTS if v != "avx2" or cpu_has_avx2()]
    variants = dict(parse_variant(s) for s in specs)
    chapters = find_chapters(args.chapters)
    jobs = [(path, name, env, k) for k in args.offsets for path in chapters for name, env in variants.items()]
    print(f"{len(jobs)} runs: {len(chapters)} chapters x {len(variants)} variants x "
          f"{len(args.offsets)} offsets, {args.jobs} at a time", flush=True)
    start = time.perf_counter()
    results = []
    with futures.ThreadPoolExecutor(args.jobs) as pool:
        pending = {pool.submit(run_one, path, env, k, args.timeout): (name, k)
                   for path, name, env, k in jobs}
        for done in futures.as_completed(pending):
            name, k = pending[done]
            r = done.result() | {"variant": name}
            results.append(r)
            if args.json:  # written as runs finish, so an interrupted matrix keeps what it ran
                write_json(args.json, results, time.perf_counter() - start)
            print(f"  {r['mark']} {r['chapter']:<36} {name:<10} offset {k}  {r['seconds']:6.1f} s"
                  + (f"  {r['message'][:160]}" if r["mark"] != "." else ""), flush=True)
    wall = time.perf_counter() - start
    print()
    print(format_table(results, chapters, list(variants), args.offsets))
    print(f"\nmarks per cell: offsets {args.offsets} in order; . passed, F assert failed, E error, T timeout")
    failures = [r for r in results if r["mark"] != "."]
    for r in sorted(failures, key=lambda r: (r["chapter"], r["variant"], r["offset"])):
        print(f"{r['chapter']} [{r['variant']}, offset {r['offset']}] {r['message'][:500]}")
    print(f"\n{len(results) - len(failures)}/{len(results)} passed; wall time {wall / 60:.1f} min "
          f"({time.strftime('%Y-%m-%d %H:%M')})")
    return 1 if failures else 0


def write_json(path: Path, results: list[dict], wall_s: float) -> None:
    path.write_text(json.dumps({"wall_s": wall_s, "date": time.strftime("%Y-%m-%d"), "runs": results},
                               indent=1))


if __name__ == "__main__":
    sys.exit(main())
