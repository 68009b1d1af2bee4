"""What the book needs on top of Jupyter Book 1 (a local Sphinx extension).

1. **Duplicated inline scripts.** Sphinx 7.4's ``app.add_js_file(None, body=...)``, called after
   the HTML builder exists (as sphinx-togglebutton and sphinx-thebe do), registers the script
   twice: once as ``None`` and once as ``''`` (sphinx-doc/sphinx#13402, fixed in Sphinx 8.2).
   The second ``const THEBE_JS_URL = ...`` throws "Identifier 'THEBE_JS_URL' has already been
   declared" in every reader's console. We keep the first of identical script tags.

2. **The edition without solutions, for gated solutions too.** sphinx-exercise's
   ``hide_solutions = True`` drops each solution directive as it is parsed. That works for
   ``{solution}``, but a gated solution (``{solution-start}`` ... ``{solution-end}``, the form
   that lets a notebook solution contain code cells) loses only its start: its Markdown and
   code cells stay on the page, and the orphaned end node has no HTML writer, which crashes the
   build (sphinx-exercise 1.2.1). So this extension takes the switch over: it reads
   ``hide_solutions``, lets sphinx-exercise assemble every solution as usual, and then removes
   each assembled solution whole, together with any other notebook cell tagged ``solution``
   (myst-nb marks a tagged cell with the class ``tag_solution``) -- the cells that
   ``scripts/student_edition.py`` removes from the notebooks.

3. **Glued numbers for myst-nb.** ``mp.glue`` hands its values to myst-nb only in kernels whose
   environment has ``MINIPPO_MYST_GLUE`` (``minippo.prose.MYST_GLUE_VARIABLE``); elsewhere those
   outputs would be noise. The kernels myst-nb starts inherit this process's environment, so
   setting it here, before any notebook is executed, covers every build of the book.

4. **Numbers per chapter.** Without a numbered table of contents (the chapter titles carry their
   own numbers), Sphinx numbers every exercise, theorem, definition, algorithm, figure and
   labelled equation through the whole book ("Exercise 41"). :func:`number_per_chapter` renumbers
   them within each page after Sphinx has assigned them, prefixed on a chapter page with the
   chapter's number, its place among the ``chapters/`` pages of the table of contents: "Exercise
   9.3", "Figure 5.2", "(4.1)". Other pages count from 1 ("Exercise 1"). References follow.
   ``scripts/reader_edition.py``'s ``number()`` states the same rule for the reader edition.

5. **Author-year bibliography labels.** The text cites "(Schulman et al., 2017)"; the
   bibliography's pybtex style ``author_year`` (registered here) labels each entry the same way
   and lists the entries by author, then year.

6. **The book's look.** ``minippo.css`` and ``minippo.js`` (in ``book/_static``): wide
   equations and tables scroll inside their own box with a fade at the cut edge, equation
   numbers beside the formula, the glossary's Chinese in a shipped subset of Noto Sans SC.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import sphinxcontrib.bibtex.plugin
from docutils import nodes
from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.transforms import SphinxTransform
from sphinx_exercise.nodes import solution_node
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        filename = getattr(js, "filename", js) or ""
        attributes = tuple(sorted((getattr(js, "attributes", None) or {}).items()))
        key = (str(filename), attributes)
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept


def take_over_hide_solutions(app, config):
    """Remember ``hide_solutions`` for :class:`RemoveSolutions`; sphinx-exercise sees False."""
    config.minippo_hide_solutions = bool(config.hide_solutions)
    config.hide_solutions = False


class RemoveSolutions(SphinxTransform):
    """With ``hide_solutions``, remove every solution and every cell tagged ``solution``."""

    default_priority = 20  # after sphinx-exercise merges gated solutions (priority 10)

    def apply(self):
        if not self.config.minippo_hide_solutions:
            return
        doomed = list(self.document.findall(solution_node))
        doomed += [node for node in self.document.findall(nodes.container)
                   if "tag_solution" in node.get("classes", [])]
        for node in doomed:
            if node.parent is not None:
                node.parent.remove(node)


CHAPTER_PREFIX = "chapters/"  # the numbered chapters' pages (scripts/reader_edition.py agrees)


def reading_order(env) -> list[str]:
    """Every page in table-of-contents order, the root first."""
    order, stack = [], [env.config.root_doc]
    while stack:
        docname = stack.pop(0)
        if docname not in order:
            order.append(docname)
            stack[:0] = env.toctree_includes.get(docname, [])
    return order


def chapter_numbers(env) -> dict[str, int]:
    """``{docname: n}`` for the chapters, numbered 1, 2, ... in reading order."""
    chapters = [doc for doc in reading_order(env) if doc.startswith(CHAPTER_PREFIX)]
    return {doc: n for n, doc in enumerate(chapters, start=1)}


def number_per_chapter(app, env) -> list[str]:
    """Renumber what Sphinx numbered through the book, per page: ``(chapter, k)`` on a chapter's
    page, ``(k,)`` elsewhere, keeping the page's order (Sphinx's numbers increase through it)."""
    chapters = chapter_numbers(env)
    for docname, kinds in env.toc_fignumbers.items():
        prefix = (chapters[docname],) if docname in chapters else ()
        for numbers in kinds.values():
            for k, figure_id in enumerate(sorted(numbers, key=numbers.get), start=1):
                numbers[figure_id] = (*prefix, k)
    return list(env.toc_fignumbers)


def cited_authors(entry) -> str:
    """"Owen", "Nota and Thomas", "Schulman et al.": the authors as a citation names them."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.prelast_names + p.last_names).replace("{", "").replace("}", "") for p in people]
    return names[0] if len(names) == 1 else (" and ".join(names) if len(names) == 2 else f"{names[0]} et al.")


def author_year(entries) -> dict[str, tuple[str, str]]:
    """``{key: (authors, year)}`` for pybtex ``entries`` (key -> entry), as the text cites them;
    works that would read alike get the years 2022a, 2022b, ... in the order of their titles.
    (``scripts/reader_edition.py`` cites with this too.)"""
    alike: dict[tuple[str, str], list[str]] = {}
    for key, entry in entries.items():
        year = re.match(r"\d*", entry.fields.get("year", "")).group(0)
        alike.setdefault((cited_authors(entry), year), []).append(key)
    out = {}
    for (authors, year), keys in alike.items():
        keys.sort(key=lambda k: str(entries[k].fields.get("title", "")).lower())
        for i, key in enumerate(keys):
            out[key] = (authors, year + ("abcdefghijklmnopqrstuvwxyz"[i] if len(keys) > 1 else ""))
    return out


def disambiguate_years(app) -> None:
    """Give works that would be cited alike distinct years (2022a, 2022b) in the bibliography
    data sphinxcontrib-bibtex has just read, so that citations and labels tell them apart."""
    entries = app.env.get_domain("cite").bibdata.data.entries
    for key, (_, year) in author_year(entries).items():
        entries[key].fields["year"] = year


def round_brackets() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclass
class AuthorYearRound(AuthorYearReferenceStyle):
    """sphinxcontrib-bibtex's author-year citations in round brackets: "(Schulman et al.,
    2017)", "Schulman et al. (2017)" (the recipe of its documentation; 2.7 ships square ones)."""
    bracket_parenthetical: BracketStyle = field(default_factory=round_brackets)
    bracket_textual: BracketStyle = field(default_factory=round_brackets)
    bracket_author: BracketStyle = field(default_factory=round_brackets)
    bracket_label: BracketStyle = field(default_factory=round_brackets)
    bracket_year: BracketStyle = field(default_factory=round_brackets)


class AuthorYearLabels(BaseLabelStyle):
    """"Schulman et al., 2017": the label is the parenthetical citation's text."""
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield f"{cited_authors(entry)}, {entry.fields.get('year', '')}"


class AuthorYearStyle(UnsrtStyle):
    """pybtex's ``unsrt`` entries, labelled and sorted as the text cites them."""
    default_label_style = "author_year"
    default_sorting_style = "author_year_title"


MYST_GLUE_VARIABLE = "MINIPPO_MYST_GLUE"  # minippo.prose.MYST_GLUE_VARIABLE (a test checks)


def setup(app):
    os.environ[MYST_GLUE_VARIABLE] = "1"
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels, force=True)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle, force=True)
    sphinxcontrib.bibtex.plugin.register_plugin(
        "sphinxcontrib.bibtex.style.referencing", "author_year_round", AuthorYearRound, force=True)
    app.connect("builder-inited", disambiguate_years, priority=900)  # after sphinxcontrib-bibtex reads
    app.connect("env-get-updated", number_per_chapter, priority=900)  # after Sphinx numbers (500)
    app.add_css_file("minippo.css")
    app.add_js_file("minippo.js", defer="defer")
    app.setup_extension("sphinx_exercise")
    app.add_config_value("minippo_hide_solutions", False, "env")
    app.connect("config-inited", take_over_hide_solutions, priority=100)
    app.connect("html-page-context", dedupe_scripts)
    app.add_transform(RemoveSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
