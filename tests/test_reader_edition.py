"""The reader edition (scripts/reader_edition.py): the chapters as Colab and Jupyter show them.

- The committed edition is what the script writes from the current chapters (else: rerun it).
- Looking as Colab and Jupyter look: for every chapter, the notebook its Colab button opens is
  rendered with a plain CommonMark renderer (markdown-it; Markdown cells, and the Markdown that
  each hidden prose cell displays) and no MyST survives; every ``$``/``$$`` pairs up.
- The numbers, references and citations are the rendered book's, checked against the built
  book's HTML; every glued number a prose cell quotes exists in the book's executed run, and the
  prose filled with that run's values is clean too.
- One chapter's edition is executed in a real kernel, as a reader runs it, rendered by nbconvert
  (Jupyter's HTML exporter) with the book's MathJax, checked in headless Chromium and saved as
  ``_build/screenshots/reader_edition.png`` for a person to look at.
- The conversion itself, on small examples; and ``mp.prose`` formats exactly as myst-nb does.
"""
from __future__ import annotations

import copy
import html
import json
import re
import shutil
import time

import nbformat
import pytest
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import minippo as mp
from book_toc import CONFIG, ROOT, colab_notebook, reader_edition as R, toc_files
from test_book import BUILD, SCREENSHOT, Visit, serve

CHAPTERS = [doc for doc in toc_files() if doc.startswith("chapters/")]
EXECUTED_DOC = "chapters/01_policy_gradient"  # cheap, and it has every construct: glue shown
                                              # before it is computed, theorems, equations, gated solutions
READER_SCREENSHOT = SCREENSHOT.parent / "reader_edition.png"
MATHJAX = ROOT / "book" / "_static" / "mathjax"
ANCHOR = r'(?:<a id="[^"]+"></a>)?'  # before a numbered block's bold heading


@pytest.fixture(scope="module")
def book():
    return R.load_book()


def read(path):
    return nbformat.read(path, as_version=4)


def opened_by_colab(doc: str):
    return read(ROOT / colab_notebook(doc))


# ----------------------------------------------------------------------------- what a reader sees
def prose_markdown(cell) -> str | None:
    """The Markdown a hidden prose cell displays (before ``mp.prose.fill``), or None."""
    match = re.search(r'mp\.prose\.show\(r"""\n(.*)\n"""\)\s*$', cell.source, re.S)
    return match.group(1) if match else None


def markdown_seen(nb, values: dict | None = None) -> list[str]:
    """Every piece of Markdown a reader's front end renders: Markdown cells, each prose cell's
    paragraph filled with ``values`` (glue name -> MIME bundle; missing names read "[…]"), and
    the Markdown outputs an executed notebook holds."""
    seen = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            seen.append(cell.source)
        elif cell.cell_type == "code":
            prose = prose_markdown(cell)
            if prose is not None and values is not None:
                seen.append(mp.prose.fill(prose, values))
            seen += [o["data"]["text/markdown"] for o in cell.get("outputs", [])
                     if "text/markdown" in o.get("data", {})]
    return seen


COMMONMARK = MarkdownIt("commonmark").use(dollarmath_plugin, allow_digits=True, double_inline=True)


def myst_leftovers(markdown: str) -> list[str]:
    """MyST markup a CommonMark renderer would show as text, found in its rendering."""
    rendered = COMMONMARK.render(markdown)
    rendered = re.sub(r'<(span|div) class="math[^"]*">.*?</\1>', "", rendered, flags=re.S)  # TeX's own {braces}
    text = html.unescape(rendered)
    found = []
    for what, pattern, where in [
        ("a role", r"\{[\w:+-]+\}<code>", rendered),  # {ref}`x` renders as {ref}<code>x</code>
        ("a directive fence", r'class="language-\{', rendered),  # ```{exercise} is a code block
        ("a colon fence", r":::+\s*\{", text),
        ("a glue role", r"\{glue", text),
        ("a {prf:...}", r"\{prf:", text),
        ("a (label)= target", r"(^|>)\([^()\s<]+\)=", text),
        ("a role name", r"\{(ref|numref|eq|cite(:[pt])?|term|doc)\}", text),
    ]:
        found += [f"{what}: ...{where[max(m.start() - 40, 0):m.end() + 40]}..."
                  for m in re.finditer(pattern, where, flags=re.M)]
    return found


def unbalanced_math(markdown: str) -> list[str]:
    """Dollar signs that open no math: left in the text once ``$...$``/``$$...$$`` are parsed."""
    found = []
    for token in COMMONMARK.parse(markdown):
        for child in token.children or []:
            if child.type == "text" and "$" in child.content:
                found.append(child.content[:80])
    return found


def clean(markdown_pieces: list[str]) -> list[str]:
    return [problem for md in markdown_pieces for problem in myst_leftovers(md) + unbalanced_math(md)]


def test_the_checks_catch_myst_and_stray_dollars():
    """The control: the source chapters, which Colab used to open, fail the checks."""
    problems = clean([c.source for c in read(ROOT / f"{CHAPTERS[2]}.ipynb").cells if c.cell_type == "markdown"])
    for what in ("a role", "a directive fence", "a glue role", "a {prf:...}"):
        assert any(p.startswith(what) for p in problems), what
    assert myst_leftovers("(ch-x)=\n## X\n\n:::{note}\nHi\n:::")
    assert unbalanced_math("costs $5, no more") and not unbalanced_math("$a$, `$b`, $$c$$")


# ----------------------------------------------------------------------------- the edition is current
@pytest.mark.parametrize("doc", CHAPTERS)
def test_committed_edition_is_up_to_date(book, doc):
    path = ROOT / colab_notebook(doc)
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `python scripts/reader_edition.py`"
    fresh = R.render(ROOT / f"{doc}.ipynb", book)
    assert path.read_text(encoding="utf-8") == fresh, (
        f"{path.relative_to(ROOT)} is out of date with {doc}.ipynb: run `python scripts/reader_edition.py`")


def test_colab_opens_the_reader_edition():
    for doc in CHAPTERS:
        assert colab_notebook(doc) == R.edition_path(ROOT / f"{doc}.ipynb").relative_to(ROOT).as_posix()
    assert "reader_edition" in CONFIG["exclude_patterns"], "the book must not build the edition as pages"


# ----------------------------------------------------------------------------- as Colab and Jupyter show it
@pytest.mark.parametrize("doc", CHAPTERS)
def test_colab_notebook_shows_no_myst(doc):
    nb = opened_by_colab(doc)
    nbformat.validate(nb)
    problems = clean(markdown_seen(nb, values={}))
    assert not problems, f"{colab_notebook(doc)} shows MyST or unbalanced math:\n" + "\n".join(problems[:20])
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code"), "committed with outputs"


@pytest.mark.parametrize("doc", CHAPTERS)
def test_colab_notebook_keeps_the_chapter(doc):
    """Same setup cell, same code, every exercise, numbered blocks and prose cells where the
    chapter has numbered blocks and glued numbers."""
    source, edition = read(ROOT / f"{doc}.ipynb"), opened_by_colab(doc)
    first = next(c for c in edition.cells if c.cell_type == "code")
    assert first.source == next(c for c in source.cells if c.cell_type == "code").source
    assert 'if "google.colab" in sys.modules:' in first.source
    code = [c.source for c in source.cells if c.cell_type == "code"]
    kept = [re.sub(r"^# @title[^\n]*\n", "", c.source) for c in edition.cells
            if c.cell_type == "code" and prose_markdown(c) is None]
    assert kept == code, "the edition must run exactly the chapter's code"
    text = "\n".join(c.source for c in source.cells if c.cell_type == "markdown")
    shown = "\n".join(markdown_seen(edition, values={}))
    n_exercises = len(re.findall(r"^\s*[`:]{3,}\{exercise\}", text, flags=re.M))
    assert len(re.findall(rf"^> {ANCHOR}\*\*Exercise \d+\.\d+\*\*", shown, flags=re.M)) == n_exercises
    n_solutions = len(re.findall(r"\{solution(-start)?\}", text))
    assert len(re.findall(r"<summary><b>Solution to Exercise \d+\.\d+</b>", shown)) == n_solutions
    n_glue = len(re.findall(r"\{glue:\w+\}`", text))
    prose = [prose_markdown(c) for c in edition.cells if c.cell_type == "code"]
    assert sum(len(R.GLUE.findall(p)) for p in prose if p) == n_glue, "every glued number in a prose cell"
    for cell in edition.cells:
        if prose_markdown(cell) is not None or cell.source.startswith("# @title Solution"):
            assert cell.metadata["jupyter"]["source_hidden"] is True and cell.metadata["cellView"] == "form"


# ----------------------------------------------------------------------------- the book's numbers
def page_text(fragment: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", fragment))).strip()


@pytest.mark.parametrize("doc", CHAPTERS)
def test_numbers_references_and_citations_match_the_rendered_book(built_book, book, doc):
    page = (built_book / f"{doc}.html").read_text(encoding="utf-8")
    # Numbered blocks, in order: "Exercise 9.3", "Definition 3.1", ...
    in_book = [page_text(t) for t in re.findall(r'<span class="caption-number">(.*?)</span>', page)]
    shown = "\n".join(markdown_seen(opened_by_colab(doc), values={}))
    kinds = "|".join(["Exercise"] + [k.capitalize() for k in R.NUMBERED_PROOFS])
    in_edition = re.findall(rf"^> {ANCHOR}\*\*((?:{kinds}) [\d.]+)\*\*", shown, flags=re.M)
    assert in_edition == [t for t in in_book if re.match(rf"({kinds}) [\d.]+$", t)]
    # References in the prose ({ref}, {numref}, {prf:ref}, {eq}): the edition's text ends with the book's.
    prose = re.sub(r'<p class="admonition-title">.*?</p>', "", page, flags=re.S)
    checked = 0
    for label, inner in re.findall(r'<a class="reference internal" href="[^"#]*#([^"]+)"[^>]*>(.*?)</a>', prose):
        label = label.removeprefix("equation-")
        if label in book.targets and book.targets[label].kind not in ("doc", "section"):
            assert R.reference_text(R.Page(doc, book), label).endswith(page_text(inner)), label
            checked += 1
    source = "\n".join(c.source for c in read(ROOT / f"{doc}.ipynb").cells if c.cell_type == "markdown")
    # every reference to a numbered block or equation was checked (sections and pages are not)
    numbered = [l for l in R.references(source) if l in book.targets
                and book.targets[l].kind not in ("doc", "section")]
    assert checked >= len(numbered), (checked, numbered)
    # Citations: "(Schulman et al., 2017)" and "Schulman et al. (2017)" as on the page.
    text = page_text(page)
    for role, keys in re.findall(r"\{(cite(?::[pt])?)\}`([^`]+)`", source):
        cited = R.citation(R.Page(doc, book), keys, textual=role == "cite:t")
        assert cited in text, f"{doc}: the book does not show {cited!r} for {{{role}}}`{keys}`"


def glued_values(doc: str) -> dict[str, dict]:
    """``name -> MIME bundle`` of every value glued when the book executed ``doc`` (myst-nb keeps
    them, without its MIME prefix, in ``_build/jupyter_execute/<doc>.glue.json``)."""
    data = json.loads((BUILD / "jupyter_execute" / f"{doc}.glue.json").read_text(encoding="utf-8"))
    return {name: output["data"] for name, output in data.items()}


@pytest.mark.parametrize("doc", CHAPTERS)
def test_prose_with_the_books_run_values_is_clean(built_book, doc):
    """Every number a prose cell quotes was glued in the book's executed run, and the prose
    filled with those values (as ``mp.prose.show`` fills it) shows no MyST."""
    values = glued_values(doc)
    edition = opened_by_colab(doc)
    quoted = {m["name"] for c in edition.cells if prose_markdown(c) for m in mp.prose.GLUE_ROLE.finditer(prose_markdown(c))}
    assert quoted <= set(values), f"never glued: {sorted(quoted - set(values))}"
    filled = markdown_seen(edition, values)
    assert not any(mp.prose.NOT_YET in md for md in filled)
    problems = clean(filled)
    assert not problems, "\n".join(problems[:20])


def test_colab_link_on_the_page_is_the_edition(built_book):
    for doc in CHAPTERS:
        page = (built_book / f"{doc}.html").read_text(encoding="utf-8")
        links = set(re.findall(r'href="https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/([^"]+)"', page))
        assert links == {colab_notebook(doc)}, (doc, links)


# ----------------------------------------------------------------------------- run as a reader runs it
def as_jupyter_html(nb, out_dir) -> str:
    """``nb`` as Jupyter shows it: nbconvert's JupyterLab template, hidden inputs hidden, and
    MathJax 3 (the book's copy) configured as JupyterLab configures it ($...$ and $$...$$)."""
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.metadata.get("jupyter", {}).get("source_hidden"):
            cell.metadata["transient"] = {"remove_source": True}
    exporter = HTMLExporter(template_name="lab")
    exporter.mathjax_url = "mathjax/tex-chtml-full.js"
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r'<script src="https://[^"]*require[^"]*"></script>', "", body)  # for widgets; offline
    config = ("<script>window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], "
              "displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']], processEscapes: true}};</script>\n")
    body = body.replace('<script src="mathjax/tex-chtml-full.js">', config + '<script src="mathjax/tex-chtml-full.js">', 1)
    shutil.copytree(MATHJAX, out_dir / "mathjax", dirs_exist_ok=True)
    return body


@pytest.fixture(scope="module")
def executed_edition(tmp_path_factory):
    """The reader edition of EXECUTED_DOC, executed top to bottom in a fresh kernel."""
    from nbclient import NotebookClient

    nb = opened_by_colab(EXECUTED_DOC)
    workdir = tmp_path_factory.mktemp("reader_run")
    started = time.time()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    print(f"{EXECUTED_DOC} reader edition executed in {time.time() - started:.0f} s")
    return nb


def test_executed_edition_shows_its_own_numbers(executed_edition):
    nb = executed_edition
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[:1]
    prose_cells = [c for c in nb.cells if c.cell_type == "code" and prose_markdown(c) is not None]
    assert prose_cells
    for cell in prose_cells:
        shown = [o["data"]["text/markdown"] for o in cell.outputs if "text/markdown" in o.get("data", {})]
        assert len(shown) == 1, "a prose cell displays its paragraph once"
        assert mp.prose.NOT_YET not in shown[0], f"a number was never filled in: {shown[0][:300]}"
        assert "{glue" not in shown[0]
    glue_lines = [o for c in nb.cells for o in c.get("outputs", [])
                  if o.get("output_type") == "stream" and re.search(r"^\w+ = ", o.get("text", ""), re.M)
                  and "glue(" in c.source]
    assert not glue_lines, "mp.glue printed name = value lines"
    problems = clean(markdown_seen(nb))
    assert not problems, "\n".join(problems[:20])


def test_screenshot_of_the_executed_edition_as_jupyter_renders_it(executed_edition, browser, tmp_path):
    (tmp_path / "chapter.html").write_text(as_jupyter_html(executed_edition, tmp_path), encoding="utf-8")
    with serve(tmp_path) as base:
        visit = Visit(browser, base, "chapter")
        try:
            page = visit.page
            assert not visit.blocked and not visit.failed, (visit.blocked, visit.failed)
            assert page.locator("mjx-container").count() > 100, "MathJax typeset little or nothing"
            assert not page.locator("mjx-merror").all_inner_texts(), "MathJax could not typeset some math"
            text = page.inner_text("body")
            for leftover in ("{glue", "{prf:", "{ref}", "{eq}", "{cite", "```{", ":::{", "[…]"):
                assert leftover not in text, leftover
            assert page.locator("details > summary").count() >= 6, "the solutions, folded"
            target = page.locator("text=Theorem 1").first
            target.scroll_into_view_if_needed()
            READER_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(READER_SCREENSHOT), full_page=False)
        finally:
            visit.close()
    assert READER_SCREENSHOT.stat().st_size > 10_000


# ----------------------------------------------------------------------------- the conversion, small
def tiny_book(*cells: str, code: str = "import minippo as mp") -> tuple:
    """A one-chapter book (the real one's bibliography) and its notebook from Markdown cells."""
    nb = new_notebook(cells=[new_markdown_cell("# 1. Tiny"), new_code_cell(code)]
                      + [new_markdown_cell(c) for c in cells])
    book = R.Book(docs=["chapters/tiny"], chapter_numbers={"chapters/tiny": 1},
                  citations=R.read_bibliography(ROOT / "book" / "references.bib"))
    numbering = R.Numbering(book.chapter_numbers)
    for c in nb.cells:
        if c.cell_type == "markdown":
            R.collect_targets(c.source, "chapters/tiny", book, numbering)
    return nb, book


def converted(*cells: str) -> str:
    nb, book = tiny_book(*cells)
    out = R.reader_notebook(nb, "chapters/tiny", book)
    return "\n\n".join(c.source for c in out.cells[2:])


def test_exercise_and_solution_become_numbered_quote_and_details():
    text = converted("```{exercise} Double it\n:label: ex-a\n\nWrite $2x$\nfor `x`.\n```",
                     "````{exercise}\n:label: ex-b\n\nAgain.\n````",
                     "```{solution} ex-b\n:class: dropdown\n\nIt is $x +\nx$.\n```",
                     "See {ref}`ex-b` and {numref}`ex-a`.")
    assert '> <a id="ex-a"></a>**Exercise 1.1** (Double it)\n>\n> Write $2x$\n> for `x`.' in text
    assert '> <a id="ex-b"></a>**Exercise 1.2**\n>\n> Again.' in text
    assert "<details>\n<summary><b>Solution to Exercise 1.2</b></summary>\n\nIt is $x +\nx$.\n\n</details>" in text
    assert "See Exercise 1.2 and Exercise 1.1." in text


def test_theorems_proofs_equations_and_citations():
    text = converted("```{prf:theorem} Big\n:label: thm-a\n\nIt holds:\n\n$$\na\n= b\n$$ (eq-a)\n```",
                     "```{prf:proof}\nBy {eq}`eq-a` and {prf:ref}`thm-a` {cite:p}`schulman2017ppo`.\n```",
                     "{cite:t}`schulman2017ppo` used {term}`the clip <clip>`; {math}`x^2`.",
                     "(sec-x)=\n## A section\n\nBack to {ref}`sec-x`.\n\n::: {note}\nMind the $x$.\n:::")
    assert '> <a id="thm-a"></a>**Theorem 1.1** (Big)\n>\n> It holds:\n>\n> $$ a = b \\tag{1.1} $$' in text
    assert "> *Proof.* By (1.1) and Theorem 1.1 (Schulman et al., 2017).\n>\n> ∎" in text
    assert "Schulman et al. (2017) used the clip; $x^2$." in text
    assert "(sec-x)=" not in text and "Back to A section." in text
    assert "> **Note**\n>\n> Mind the $x$." in text
    assert not clean([text])


def test_gated_solution_code_is_hidden_and_glued_prose_becomes_a_prose_cell():
    nb, book = tiny_book("```{exercise}\n:label: ex-c\n\nDo it.\n```",
                         "```{solution-start} ex-c\n```\nHere is how.",
                         "```{solution-end}\n```\nThe run gave {glue:text}`ratio:.1%` and\n"
                         "{glue:md}`names`.\n\n## Next\n\nPlain.")
    nb.cells.insert(4, new_code_cell("answer = 42"))
    out = R.reader_notebook(nb, "chapters/tiny", book)
    kinds = [(c.cell_type, c.source.splitlines()[0]) for c in out.cells[2:]]
    assert kinds == [("markdown", '> <a id="ex-c"></a>**Exercise 1.1**'), ("markdown", "<details>"),
                     ("code", "# @title Solution to Exercise 1.1: code (click to show)"),
                     ("code", R.PROSE_TITLE), ("markdown", "## Next")]
    assert "*The solution's code is in the folded cell below.*\n\n</details>" in out.cells[3].source
    assert out.cells[4].metadata["jupyter"]["source_hidden"] and out.cells[4].source.endswith("answer = 42")
    prose = prose_markdown(out.cells[5])
    values = {"ratio": mp.prose.mime_bundle(0.1234), "names": {"text/plain": "'x'", "text/markdown": "**x**"}}
    assert mp.prose.fill(prose, values) == "The run gave 12.3% and\n**x**."
    assert mp.prose.fill(prose, {}) == "The run gave […] and\n[…]."
    assert len({c.id for c in out.cells}) == len(out.cells)
    nbformat.validate(out)


def test_figure_caption_follows_its_figure_and_references_name_it():
    nb, book = tiny_book("As {numref}`fig-curve` shows.")
    meta = mp.style.figure_metadata("fig-curve", "The return, $R$, per update.", "A rising curve.")
    nb.cells.insert(2, new_code_cell("plot()", metadata=meta))
    for name, caption in R.figures(nb.cells, "chapters/tiny"):
        book.targets[name] = R.Target("figure", "chapters/tiny", R.number("figure", 1, 1, 1), caption)
    out = R.reader_notebook(nb, "chapters/tiny", book)
    assert [c.cell_type for c in out.cells[2:]] == ["code", "markdown", "markdown"]
    assert out.cells[3].source == "*Figure 1.1.* The return, $R$, per update."
    assert out.cells[4].source == "As Figure 1.1 shows."
    nbformat.validate(out)


@pytest.mark.parametrize("markup", ["```{figure} a.png\n```", "{download}`a.txt`", "{glue:figure}`x`",
                                    "{ref}`no-such-label`", "{cite:p}`no-such-key`",
                                    "```{solution-start} ex-z\n```"])
def test_unknown_markup_is_an_error_not_a_leftover(markup):
    nb, book = tiny_book(markup)
    with pytest.raises(R.Unconvertible, match="chapters/tiny"):
        R.reader_notebook(nb, "chapters/tiny", book)


def test_numbering_rule_is_one_function(book):
    """Per chapter: "Exercise 9.3" is the chapter's third; pages that are not chapters count
    from 1 (book/_ext's number_per_chapter numbers the rendered book the same way)."""
    for doc, chapter in book.chapter_numbers.items():
        exercises = [t.number for t in book.targets.values() if t.kind == "exercise" and t.doc == doc]
        assert exercises == [f"{chapter}.{k}" for k in range(1, len(exercises) + 1)], doc
    assert R.number("theorem", 7, 3, 2) == "3.2"
    assert R.number("exercise", 40, None, 1) == "1"


# ----------------------------------------------------------------------------- mp.prose
@pytest.mark.parametrize("value", [0.123456, 3, -2.5e-7, 1e6, True, "lr", 0.5, float("nan"), 12345678901])
@pytest.mark.parametrize("spec", ["", "s", ".2f", ".0%", ".1e", "g", ".3g", ",.0f", "d"])
def test_prose_formats_as_myst_nb_does(value, spec):
    from myst_nb.core.variables import format_plain_text

    text = mp.prose.mime_bundle(value)["text/plain"]
    try:
        expected = format_plain_text(text, spec)
    except (ValueError, TypeError) as exc:
        with pytest.raises(type(exc)):
            mp.prose.format_plain_text(text, spec)
        return
    assert mp.prose.format_plain_text(text, spec) == expected


def test_glue_records_values_and_prints_nothing(capsys, monkeypatch):
    import numpy as np
    import torch

    monkeypatch.delenv(mp.prose.MYST_GLUE_VARIABLE, raising=False)
    mp.glue("t_tensor", torch.tensor(0.25))
    mp.glue("t_numpy", np.float32(2.0))
    assert capsys.readouterr().out == ""
    assert mp.prose.fill("{glue:text}`t_tensor:.0%` {glue:text}`t_numpy:.1f` {glue:text}`t_missing`") == "25% 2.0 […]"


def test_book_extension_sets_the_glue_variable():
    text = (ROOT / "book" / "_ext" / "minippo_book.py").read_text(encoding="utf-8")
    assert f'MYST_GLUE_VARIABLE = "{mp.prose.MYST_GLUE_VARIABLE}"' in text
    assert f'env["{mp.prose.MYST_GLUE_VARIABLE}"] = "1"' in (ROOT / "scripts" / "robustness.py").read_text()
