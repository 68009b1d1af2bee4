"""The notebook contract: what every chapter notebook promises, checked statically.

- The table of contents and ``chapters/`` agree, and chapters keep their ``NN_name`` file names.
- The first code cell is the standard setup cell: the Colab install guard installing minippo
  from the repository URL in ``_config.yml`` (the one place the URL lives), the imports,
  ``mp.set_seed(...)`` and ``torch.set_num_threads(1)``, folded in the book.
- Notebooks are committed without outputs (the book and nbval execute them).
- Cell tags are ones that some tool understands (a misspelt tag silently does nothing), and
  every cell of a solution carries the ``solution`` tag, so the student edition removes it.

These checks read files only; they run in a second.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from book_toc import CONFIG, ROOT, TOC, reader_edition, toc_files

REPO_URL = CONFIG["repository"]["url"]

CHAPTERS = [
    "01_policy_gradient", "02_value_functions_gae", "03_trust_regions_trpo",
    "04_ppo_clipped_objective", "05_ppo_in_practice", "06_cartpole_to_tokens",
    "07_reward_models_overoptimisation", "08_capstone_rlhf_code", "09_beyond_ppo", "10_minippo_to_trl",
]
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))

# Tags that Jupyter Book / myst-nb, nbval, sphinx-exercise's student edition and JupyterLab act on.
KNOWN_TAGS = {
    "solution",                                                   # scripts/student_edition.py
    "hide-input", "hide-output", "hide-cell",                     # myst-nb: folded
    "remove-input", "remove-output", "remove-cell", "remove-stderr",  # myst-nb: removed
    "raises-exception", "skip-execution",                         # myst-nb execution
    "full-width", "margin", "output_scroll", "scroll-output", "scroll-input",  # layout
    "nbval-ignore-output", "nbval-skip", "nbval-raises-exception",  # nbval
    "nbval-check-output",
}
# `points-N` (N an integer or decimal) on an exercise's statement cell: its weight for
# `python -m minippo.grade`. myst-nb ignores tags it does not know on Markdown cells.
from minippo.grade import EXERCISE_LABEL, POINTS_TAG  # noqa: E402
SOLUTION_DIRECTIVE = re.compile(r"^\s*(```+|:::+)\s*\{solution(-start|-end)?\}", re.M)


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def read(path: Path):
    return nbformat.read(path, as_version=4)


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, read(request.param)


# ----------------------------------------------------------------------------- table of contents
def test_toc_has_the_three_parts_in_order():
    assert [part["caption"] for part in TOC["parts"]] == ["Foundations", "Language models", "Appendices"]
    foundations, language_models, appendices = ([c["file"] for c in part["chapters"]]
                                                for part in TOC["parts"])
    assert foundations == [f"chapters/{name}" for name in CHAPTERS[:5]]
    assert language_models == [f"chapters/{name}" for name in CHAPTERS[5:]]
    assert all(f.startswith("book/") for f in appendices)
    assert TOC["root"] == "book/intro"


def test_toc_and_chapters_folder_agree():
    in_toc = {f for f in toc_files(TOC) if f.startswith("chapters/")}
    on_disk = {f"chapters/{p.stem}" for p in NOTEBOOKS}
    assert on_disk == in_toc, f"only on disk: {on_disk - in_toc}; only in _toc.yml: {in_toc - on_disk}"
    assert sorted(on_disk) == [f"chapters/{name}" for name in CHAPTERS]


def test_every_toc_file_exists():
    for f in toc_files(TOC):
        candidates = [ROOT / f"{f}{ext}" for ext in (".md", ".ipynb")]
        assert any(c.exists() for c in candidates), f"_toc.yml lists {f}, which does not exist"


def test_repository_url_lives_in_config():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPO_URL), REPO_URL
    assert CONFIG["repository"]["branch"] == "main"
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


# ----------------------------------------------------------------------------- the setup cell
def test_first_code_cell_is_the_standard_setup_cell(notebook):
    path, nb = notebook
    cells = code_cells(nb)
    assert cells, f"{path.name} has no code cell"
    src = cells[0].source
    lines = [line.strip() for line in src.splitlines()]
    where = f"{path.name}, first code cell"
    assert 'if "google.colab" in sys.modules:' in lines, f"{where}: no Colab guard"
    assert "import sys" in lines, f"{where}: the guard needs `import sys`"
    # an optional extra, as in `"minippo[trl] @ git+<url>"` (chapter 10 needs TRL)
    installs = re.findall(r'%pip install\s+(?:-q\s+)?"minippo(?:\[[\w,-]+\])? @ git\+([^"]+)"', src)
    assert installs, f'{where}: no `%pip install -q "minippo @ git+<url>"` line'
    assert installs == [REPO_URL], (
        f"{where} installs minippo from {installs}, but _config.yml says {REPO_URL}")
    guard = lines.index('if "google.colab" in sys.modules:')
    assert lines[guard + 1].startswith("%pip install"), f"{where}: the install must be inside the guard"
    assert "import minippo as mp" in lines, f"{where}: `import minippo as mp` missing"
    assert "import torch" in lines, f"{where}: `import torch` missing"
    assert any(re.fullmatch(r"mp\.set_seed\(\d+\)", line) for line in lines), f"{where}: no mp.set_seed(<int>)"
    assert any(re.match(r"torch\.set_num_threads\(1\)", line) for line in lines), (
        f"{where}: torch.set_num_threads(1) missing")
    tags = set(cells[0].metadata.get("tags", []))
    assert tags & {"hide-input", "remove-input", "remove-cell", "hide-cell"}, (
        f"{where}: fold or remove it in the book (tag hide-input or remove-cell)")


def test_setup_cell_comes_before_any_other_code(notebook):
    path, nb = notebook
    first_code = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    assert all(cell.cell_type in ("markdown", "raw") for cell in nb.cells[:first_code]), path.name
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# "), (
        f"{path.name}: the first cell must be the chapter's title (a `# ` heading)")


# ----------------------------------------------------------------------------- no outputs
def test_no_stored_outputs(notebook):
    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}, cell {i} has stored outputs: clear them"
            assert cell.execution_count is None, f"{path.name}, cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state: clear outputs"


#: The longest code line that fits the rendered page's code column at 1280 px (832 px of
#: monospace: 98 characters show, 96 with the scroll bar's margin); test_look.py measures it.
MAX_CODE_LINE = 95


def test_code_lines_fit_the_page(notebook):
    """A longer code line scrolls sideways in the book (test_look.py finds it only after a build)."""
    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            long = [line for line in cell.source.splitlines() if len(line) > MAX_CODE_LINE]
            assert not long, f"{path.name}, cell {i}: lines over {MAX_CODE_LINE} characters: {long}"


def test_no_control_characters(notebook):
    """A JSON escape such as ``\\b`` in ``$\\beta$`` silently becomes a backspace and breaks the math."""
    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        bad = re.findall(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", cell.source)
        assert not bad, f"{path.name}, cell {i} contains control characters {bad!r}: write \\\\beta, not \\beta"


def test_notebook_is_valid_nbformat_with_python_kernel(notebook):
    path, nb = notebook
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name


# ----------------------------------------------------------------------------- tags
def test_tags_are_known(notebook):
    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        unknown = {tag for tag in cell.metadata.get("tags", [])
                   if tag not in KNOWN_TAGS and not POINTS_TAG.fullmatch(tag)}
        assert not unknown, (f"{path.name}, cell {i}: unknown tag(s) {sorted(unknown)}; known: "
                             f"{sorted(KNOWN_TAGS)} and points-N")


def test_points_tags_sit_on_exercise_statements(notebook):
    """A `points-N` tag weights the exercise whose statement is in the same Markdown cell."""
    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        points = [tag for tag in cell.metadata.get("tags", []) if POINTS_TAG.fullmatch(tag)]
        if points:
            assert cell.cell_type == "markdown" and len(EXERCISE_LABEL.findall(cell.source)) == 1, (
                f"{path.name}, cell {i}: {points} must be on the Markdown cell of one exercise statement")
            assert len(points) == 1, f"{path.name}, cell {i}: one points tag, not {points}"


def test_solution_cells_are_tagged(notebook):
    """Every cell that is part of a solution carries ``solution``, so the student edition drops it.

    A Markdown cell that opens or closes a solution directive is part of the solution; so is
    every cell between ``{solution-start}`` and ``{solution-end}``.
    """
    path, nb = notebook
    inside = False
    for i, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        opens = cell.cell_type == "markdown" and re.search(r"\{solution-start\}", cell.source)
        closes = cell.cell_type == "markdown" and re.search(r"\{solution-end\}", cell.source)
        is_part = inside or bool(opens) or bool(closes) or (
            cell.cell_type == "markdown" and SOLUTION_DIRECTIVE.search(cell.source))
        if is_part:
            assert "solution" in tags, (
                f"{path.name}, cell {i} is part of a solution but is not tagged `solution`:\n"
                f"{cell.source[:200]}")
        if opens:
            inside = True
        if closes:
            inside = False
    assert not inside, f"{path.name}: a {{solution-start}} without its {{solution-end}}"


def test_solution_tagged_code_sits_inside_a_gated_solution(notebook):
    """A code cell tagged ``solution`` must be between ``{solution-start}`` and ``{solution-end}``,
    or the rendered book shows it unfolded, next to the exercise."""
    path, nb = notebook
    inside = False
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            if re.search(r"\{solution-start\}", cell.source):
                inside = True
            if re.search(r"\{solution-end\}", cell.source):
                inside = False
        elif "solution" in cell.metadata.get("tags", []):
            assert inside, (f"{path.name}, cell {i}: a `solution` code cell outside "
                            "{solution-start} ... {solution-end}")


def test_exercises_have_solutions_and_checkers(notebook):
    """Each ``{exercise}`` label has a solution, and the chapter calls a ``minippo.checks`` checker."""
    path, nb = notebook
    text = "\n".join(cell.source for cell in nb.cells)
    labels = EXERCISE_LABEL.findall(text)
    for label in labels:
        assert re.search(r"\{solution(?:-start)?\}\s*" + re.escape(label) + r"\b", text), (
            f"{path.name}: exercise {label} has no solution")
    if labels:
        assert re.search(r"\b(mp\.)?checks\.check\w*\(", text), (
            f"{path.name} has exercises but calls no minippo.checks checker")


# Every cross-reference target is defined once in the whole book: a section label `(name)=`,
# a directive's `:label:`, a labelled equation, or a figure cell's `mystnb.figure.name`. Sphinx
# reports a second definition only in the `-W` book build ("Duplicate explicit target name"),
# minutes into a run; this finds it in a second. (A section and its figure once shared a name.)
# The scan is the reader edition's, which resolves the same references for Colab.
def test_every_target_is_defined_once():
    where = {}
    for name, doc in reader_edition.load_book().definitions:
        where.setdefault(name, []).append(doc)
    twice = {name: docs for name, docs in where.items() if len(docs) > 1}
    assert not twice, f"targets defined more than once (rename one; Sphinx fails the -W build): {twice}"
    assert len(where) > 50, "the target scan found too few targets; is it still reading the book?"
