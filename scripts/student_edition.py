"""Write the student edition of the book: the chapters without their solutions.

    python scripts/student_edition.py                 # student_edition/chapters/*.ipynb
    python scripts/student_edition.py --out handout/  # somewhere else
    python scripts/student_edition.py chapters/02_value_functions_gae.ipynb   # some chapters only
    python scripts/student_edition.py --html          # also the rendered book without solutions,
                                                      # in student_edition/_build/html

Notebooks: every cell tagged ``solution`` is removed and every code cell's outputs and
execution count are cleared (:func:`strip_notebook`); then the MyST markup is turned into plain
Markdown exactly as in the reader edition (``scripts/reader_edition.py``), so the notebooks read
cleanly in Colab, Jupyter and VS Code. The source notebooks are never modified.

Rendered book (``--html``): builds the book with sphinx-exercise's ``hide_solutions`` switched
on, from a copy of ``_config.yml`` that differs only in that switch (so ``_config.yml`` stays
the one source of truth); the book's extension ``book/_ext/minippo_book.py`` then also drops
the notebook cells tagged ``solution``. See the instructors' guide (book/instructors.md).
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when imported
import reader_edition  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOLUTION_TAG = "solution"
DEFAULT_OUT = ROOT / "student_edition"


def is_solution(cell) -> bool:
    """True for a cell tagged ``solution`` (the tag every cell of a solution carries)."""
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def strip_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without its ``solution`` cells and with every output cleared."""
    nb = copy.deepcopy(nb)
    nb.cells = [cell for cell in nb.cells if not is_solution(cell)]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def student_notebook(nb: nbformat.NotebookNode, doc: str, book) -> nbformat.NotebookNode:
    """The student edition of one notebook: no solutions, no outputs, plain Markdown."""
    return reader_edition.reader_notebook(strip_notebook(nb), doc, book)


def write_student_edition(notebooks: list[Path], out: Path) -> list[Path]:
    """Write student copies of ``notebooks`` under ``out``, keeping their path below the root.

    Notebooks that are not pages of the book are numbered as if they followed it."""
    placed = []
    for src in notebooks:
        src = src.resolve()
        try:
            rel = src.relative_to(ROOT)
        except ValueError:  # a notebook outside the repository: keep just its name
            rel = Path(src.name)
        placed.append((src, rel, rel.with_suffix("").as_posix()))
    pages = reader_edition.toc_files(reader_edition.read_yaml(ROOT / "_toc.yml"))
    book = reader_edition.load_book(extra=[(doc, src) for src, _, doc in placed if doc not in pages])
    written = []
    for src, rel, doc in placed:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student_notebook(nbformat.read(src, as_version=4), doc, book), dst)
        written.append(dst)
    return written


def nosolutions_config(config_path: Path = ROOT / "_config.yml") -> dict:
    """``_config.yml`` with ``hide_solutions`` on, its local-extension paths made absolute.

    (Jupyter Book resolves ``sphinx.local_extensions`` paths relative to the config file, and
    the copy lives in another folder.)
    """
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    sphinx = config.setdefault("sphinx", {})
    sphinx.setdefault("config", {})["hide_solutions"] = True
    extensions = sphinx.get("local_extensions") or {}
    sphinx["local_extensions"] = {name: str((config_path.parent / path).resolve())
                                  for name, path in extensions.items()}
    return config


def build_html(out: Path, source: Path = ROOT, extra_config: dict | None = None,
               toc: Path | None = None) -> Path:
    """Build the rendered book without solutions into ``out/_build/html``; return that folder.

    ``extra_config`` is merged into the top level of the configuration (the tests use it to
    switch notebook execution off); ``toc`` replaces ``_toc.yml``.
    """
    out.mkdir(parents=True, exist_ok=True)
    config = nosolutions_config(source / "_config.yml")
    for key, value in (extra_config or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    config_path = out / "_config.yml"
    config_path.write_text("# Written by scripts/student_edition.py; edit _config.yml instead.\n"
                           + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                           encoding="utf-8")
    cmd = ["jupyter-book", "build", "-W", "-n", "--keep-going", str(source),
           "--config", str(config_path), "--path-output", str(out)]
    if toc is not None:
        cmd += ["--toc", str(toc)]
    subprocess.run(cmd, check=True)
    return out / "_build" / "html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to strip (default: every chapters/*.ipynb)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: student_edition/)")
    parser.add_argument("--html", action="store_true",
                        help="also build the rendered book without solutions (OUT/_build/html)")
    args = parser.parse_args(argv)

    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    written = write_student_edition(notebooks, args.out)
    removed = sum(sum(map(is_solution, nbformat.read(nb, as_version=4).cells)) for nb in notebooks)
    print(f"Wrote {len(written)} notebooks without their {removed} solution cells to {args.out}")
    if args.html:
        html = build_html(args.out)
        print(f"The book without solutions is in {html} (open index.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
