"""The student edition (scripts/student_edition.py) and the rendered edition without solutions.

- Notebooks: exactly the ``solution``-tagged cells are gone, every output is cleared, and
  everything else (cells, ids, metadata, order) is identical to the source; the notebooks
  written are that, in the reader edition's plain Markdown (no MyST left, no solution shown).
- Rendered book: with ``hide_solutions`` the exercises stay and the solutions, including the
  code cells of a gated solution, are gone. Built from a small copy of the book with notebook
  execution off, so it takes seconds, not the whole book's minutes.
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from book_toc import load_script, reader_edition
from test_reader_edition import clean, markdown_seen

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "student_edition.py"
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))

student_edition = load_script("student_edition")


def solution_tagged(cell) -> bool:
    return "solution" in cell.metadata.get("tags", [])


def expected_student_copy(nb):
    """What the student edition must be, written independently of the script."""
    nb = copy.deepcopy(nb)
    kept = []
    for cell in nb.cells:
        if solution_tagged(cell):
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        kept.append(cell)
    nb.cells = kept
    return nb


def exercise_notebook():
    """A chapter-like notebook with an exercise, a gated solution and stored outputs."""
    setup = new_code_cell("import sys\nimport minippo as mp\nmp.set_seed(0)",
                          metadata={"tags": ["hide-input"]}, execution_count=1,
                          outputs=[new_output("stream", name="stdout", text="ready\n")])
    cells = [
        new_markdown_cell("# 0. A test chapter"),
        setup,
        new_markdown_cell("```{exercise} Double it\n:label: ex-double\n\nWrite `double(x)`.\n```",
                          metadata={"tags": ["points-2"]}),  # minippo.grade's weight; the book ignores it
        new_code_cell("def double(x):\n    ...  # your code here  # STUDENT-STUB", execution_count=2),
        new_markdown_cell("```{solution-start} ex-double\n```", metadata={"tags": ["solution"]}),
        new_code_cell("def double(x):\n    return 2 * x  # SOLUTION-CODE",
                      metadata={"tags": ["solution", "hide-output"]}, execution_count=3,
                      outputs=[new_output("execute_result", data={"text/plain": "4"}, execution_count=3)]),
        new_markdown_cell("Multiplying by two is the whole trick. SOLUTION-PROSE",
                          metadata={"tags": ["solution"]}),
        new_markdown_cell("```{solution-end}\n```", metadata={"tags": ["solution"]}),
        new_code_cell("assert double(2) == 4  # AFTER-EXERCISE", execution_count=4,
                      outputs=[new_output("display_data", data={"text/plain": "ok"})]),
    ]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nb


# ----------------------------------------------------------------------------- notebooks
def test_strip_removes_exactly_the_solution_cells_and_clears_outputs():
    nb = exercise_notebook()
    out = student_edition.strip_notebook(nb)
    assert out == expected_student_copy(nb)
    sources = "\n".join(cell.source for cell in out.cells)
    assert "SOLUTION-CODE" not in sources and "SOLUTION-PROSE" not in sources
    assert "{solution-start}" not in sources and "{solution-end}" not in sources
    assert "STUDENT-STUB" in sources and "AFTER-EXERCISE" in sources and "{exercise}" in sources
    assert len(out.cells) == len(nb.cells) - 4
    assert all(c.outputs == [] and c.execution_count is None for c in out.cells if c.cell_type == "code")
    assert [c.id for c in out.cells] == [c.id for c in nb.cells if not solution_tagged(c)]
    assert out.metadata == nb.metadata
    assert len(nb.cells) == 9 and nb.cells[5].outputs, "the source notebook must not be modified"
    nbformat.validate(out)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_strip_on_every_chapter(path):
    nb = nbformat.read(path, as_version=4)
    out = student_edition.strip_notebook(nb)
    assert out == expected_student_copy(nb)
    n_solution = sum(map(solution_tagged, nb.cells))
    assert len(out.cells) == len(nb.cells) - n_solution
    nbformat.validate(out)


def test_command_writes_every_chapter_and_leaves_sources_alone(tmp_path):
    before = {p: p.read_bytes() for p in NOTEBOOKS}
    extra = tmp_path / "elsewhere" / "99_extra.ipynb"
    extra.parent.mkdir()
    nbformat.write(exercise_notebook(), extra)
    out = tmp_path / "edition"
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Wrote" in result.stdout
    written = sorted((out / "chapters").glob("*.ipynb"))
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    book = reader_edition.load_book()
    for src, dst in zip(NOTEBOOKS, written):
        got = nbformat.read(dst, as_version=4)
        doc = f"chapters/{src.stem}"
        assert got == reader_edition.reader_notebook(expected_student_copy(nbformat.read(src, as_version=4)), doc, book)
        shown = markdown_seen(got, values={})
        assert not clean(shown), f"{dst.name} shows MyST: {clean(shown)[:3]}"
        assert not any("Solution to" in md for md in shown), f"{dst.name} shows a solution"
        assert not any(c.metadata.get("tags", []).count("solution") for c in got.cells)
    assert {p: p.read_bytes() for p in NOTEBOOKS} == before, "the source notebooks were modified"
    # A submitted student edition is recognised by the grader: the same exercise labels.
    from minippo.grade import EXERCISE_LABEL

    for src, dst in zip(NOTEBOOKS, written):
        labels = [[label for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown"
                   for label in EXERCISE_LABEL.findall(c.source)] for p in (src, dst)]
        assert labels[0] == labels[1], f"{dst.name}: the grader sees {labels[1]}, the chapter has {labels[0]}"

    # Named notebooks only, including one outside the repository.
    result = subprocess.run([sys.executable, str(SCRIPT), str(extra), "--out", str(tmp_path / "one")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    got = nbformat.read(tmp_path / "one" / "99_extra.ipynb", as_version=4)
    sources = "\n".join(c.source for c in got.cells)
    assert "SOLUTION" not in sources and "STUDENT-STUB" in sources and "AFTER-EXERCISE" in sources
    assert re.search(r'^> <a id="ex-double"></a>\*\*Exercise [\d.]+\*\* \(Double it\)', sources, flags=re.M), sources
    assert not clean(markdown_seen(got, values={}))
    assert "4 solution cells" in result.stdout


def test_nosolutions_config_differs_from_config_only_in_the_switch():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    derived = student_edition.nosolutions_config()
    assert derived["sphinx"]["config"].pop("hide_solutions") is True
    assert config["sphinx"]["config"].pop("hide_solutions", False) is False
    for name, path in derived["sphinx"]["local_extensions"].items():
        assert Path(path).is_absolute() and Path(path) == (ROOT / config["sphinx"]["local_extensions"][name]).resolve()
    derived["sphinx"]["local_extensions"] = config["sphinx"]["local_extensions"]
    assert derived == config
    assert derived["repository"]["url"] == config["repository"]["url"]


# ----------------------------------------------------------------------------- rendered edition
@pytest.fixture(scope="module")
def small_book(tmp_path_factory):
    """The book's configuration and pages, stand-ins for the chapters and one exercise notebook."""
    src = tmp_path_factory.mktemp("book_src")
    shutil.copy(ROOT / "_config.yml", src / "_config.yml")
    shutil.copytree(ROOT / "book", src / "book")
    (src / "chapters").mkdir()
    for chapter in NOTEBOOKS:  # title-only stand-ins, so links resolve and nothing needs running
        title = nbformat.read(chapter, as_version=4).cells[0]
        # the heading alone: the rest of the title cell (objectives) refers to the chapter's sections
        title.source = title.source.splitlines()[0]
        nbformat.write(new_notebook(cells=[title], metadata=exercise_notebook().metadata),
                       src / "chapters" / chapter.name)
    nbformat.write(exercise_notebook(), src / "chapters" / "00_test.ipynb")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    toc["parts"][-1]["chapters"].append({"file": "chapters/00_test"})
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    return src


def text_of(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_hide_solutions_build_drops_solutions_and_keeps_exercises(small_book, tmp_path):
    html_dir = student_edition.build_html(tmp_path / "out", source=small_book,
                                          extra_config={"execute": {"execute_notebooks": "off"}})
    chapter = (html_dir / "chapters" / "00_test.html").read_text(encoding="utf-8")
    assert "STUDENT-STUB" in chapter and "AFTER-EXERCISE" in chapter
    assert 'class="exercise admonition' in chapter
    assert "SOLUTION-CODE" not in chapter, "the code of a gated solution survived hide_solutions"
    assert "SOLUTION-PROSE" not in chapter
    assert 'class="solution' not in chapter
    instructors = (html_dir / "book" / "instructors.html").read_text(encoding="utf-8")
    assert 'class="exercise admonition' in instructors
    assert 'class="solution' not in instructors
    assert "The recursion runs backwards in time" not in text_of(instructors)


def test_normal_build_of_the_same_book_keeps_the_solutions(small_book, tmp_path):
    """The control: the same sources with the switch off do show the solutions."""
    config = yaml.safe_load((small_book / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (small_book / "_config_on.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(["jupyter-book", "build", "-W", "-n", "--keep-going", str(small_book),
                             "--config", str(small_book / "_config_on.yml"),
                             "--path-output", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    chapter = (tmp_path / "_build" / "html" / "chapters" / "00_test.html").read_text(encoding="utf-8")
    assert 'class="solution' in chapter and "SOLUTION-CODE" in chapter and "SOLUTION-PROSE" in chapter
