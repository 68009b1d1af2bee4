"""Write the reader edition: the chapters as notebooks that read cleanly in Colab, Jupyter and VS Code.

    python scripts/reader_edition.py            # writes reader_edition/chapters/*.ipynb
    python scripts/reader_edition.py --check    # exit 1 if the committed edition is out of date

The chapters (``chapters/*.ipynb``) are the one source. They are written in MyST for Jupyter
Book, whose directives and roles only the rendered book understands. The reader edition is the
same notebooks with that markup turned into what every notebook front end renders (CommonMark,
HTML ``<details>``, ``$...$`` math); it is committed, and the book's Colab buttons open it
(``repository.path_to_book`` in ``_config.yml``). The conversion:

- ``{exercise}``, ``{prf:theorem}`` and the other numbered blocks become quoted blocks headed
  "**Exercise 9.3** (title)", numbered as the rendered book numbers them (:func:`number`), after an
  invisible ``<a id="label">`` anchor (``minippo.grade`` recognises exercises by it); proofs
  are "*Proof.* ... ∎"; admonitions are quoted blocks with a bold title.
- ``{solution}`` becomes a ``<details>`` block, "Solution to Exercise 9.3", folded as in the book;
  the code cells of a ``{solution-start}`` ... ``{solution-end}`` solution get a hidden input.
- ``{ref}``, ``{numref}``, ``{prf:ref}`` and ``{eq}`` become the text the book shows ("Exercise
  13", "Definition 6", "(4)"), with the chapter when the target is in another one ("Chapter 3,
  Definition 6"); ``{cite:p}``/``{cite:t}`` become "(Schulman et al., 2017)" / "Schulman et al.
  (2017)" from ``book/references.bib``; ``{term}`` and ``{doc}`` become their text; ``(label)=``
  targets go; labelled equations get ``\\tag{n}``.
- A block of prose that quotes glued numbers (``{glue:text}`name:.2f```) becomes a code cell with
  a hidden input, ``mp.prose.show(r\"\"\"...\"\"\")``, which shows it as Markdown with the reader's
  own numbers (see ``minippo/prose.py``).

Markup the converter does not know is an error that names the chapter, so nothing unconverted
reaches a reader. ``scripts/student_edition.py`` uses :func:`reader_notebook` too.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "reader_edition"

NUMBERED_PROOFS = {"algorithm", "assumption", "axiom", "conjecture", "corollary", "criterion",
                   "definition", "example", "lemma", "observation", "property", "proposition",
                   "remark", "theorem"}
ADMONITIONS = {"admonition", "attention", "caution", "danger", "error", "hint", "important",
               "note", "seealso", "tip", "warning"}
#: Amsmath environments MyST accepts as display math without ``$$``.
AMSMATH = r"equation|multline|gather|align|alignat|flalign|matrix|pmatrix|bmatrix|Bmatrix|vmatrix|Vmatrix|eqnarray"

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
DIRECTIVE = re.compile(r"^\{(?P<name>[\w:-]+)\}\s*(?P<arg>.*)$")
TARGET = re.compile(r"^\((?P<label>[^()\s]+)\)=\s*$")
EQ_LABEL = re.compile(r"\$\$\s*\((?P<label>[^()\s]+)\)\s*$")
ROLE_OR_CODE = re.compile(r"\{(?P<role>[\w:+-]+)\}(?P<tick>`+)(?P<content>.+?)(?P=tick)(?!`)"
                          r"|(?P<code>(?P<ctick>`+).+?(?P=ctick)(?!`))", re.S)
EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)
MATH_OR_CODE = re.compile(r"(?P<code>(?P<tick>`+)[\s\S]*?(?P=tick))"
                          r"|(?P<math>(?<!\\)\$\$[\s\S]+?(?<!\\)\$\$|(?<![\\$])\$(?!\$)(?:\\.|[^$\\])+?\$)")
GLUE = re.compile(r"\{glue(?::\w+)?\}`")


# ----------------------------------------------------------------------------- the book
def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` of a Jupyter Book table of contents, in reading order (root first)."""
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def doc_path(root: Path, doc: str) -> Path:
    for ext in (".ipynb", ".md"):
        if (root / f"{doc}{ext}").exists():
            return root / f"{doc}{ext}"
    raise FileNotFoundError(f"_toc.yml lists {doc}, which is neither {doc}.ipynb nor {doc}.md")


def markdown_sources(path: Path) -> list[str]:
    """The Markdown of a page: its Markdown cells, or the whole file for a ``.md`` page."""
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return [cell.source for cell in nb.cells if cell.cell_type == "markdown"]
    return [path.read_text(encoding="utf-8")]


@dataclass
class Target:
    """Something a reference can point to: a numbered block, an equation, a section or a page."""
    kind: str          # "exercise", "theorem", ..., "equation", "section", "doc"
    doc: str
    number: str = ""
    title: str = ""


@dataclass
class Book:
    """What the conversion needs to know about the whole book."""
    docs: list[str]
    targets: dict[str, Target] = field(default_factory=dict)
    # (name, doc) of every explicitly named target, in reading order: a name twice here is a
    # name Sphinx rejects ("Duplicate explicit target name"), though ``targets`` keeps one
    definitions: list[tuple[str, str]] = field(default_factory=list)
    chapter_numbers: dict[str, int] = field(default_factory=dict)
    citations: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (authors, year)
    brackets: tuple[str, str] = ("(", ")")


def number(kind: str, in_book: int, chapter: int | None, in_chapter: int) -> str:
    """The number the rendered book gives the ``in_book``-th block of ``kind`` (``in_chapter``-th
    of its page; ``chapter``: the page's chapter number, None for a page that is not a chapter).
    The book numbers every kind (exercise, theorem, ..., figure, labelled equation) per page,
    after the chapter's number on a chapter's page: Exercise 9.3, Figure 5.2, equation (4.1);
    Exercise 1 elsewhere (``number_per_chapter`` in ``book/_ext/minippo_book.py``)."""
    return f"{chapter}.{in_chapter}" if chapter else str(in_chapter)


@dataclass
class Numbering:
    """Counts the numbered blocks of each kind, through the book and per page, in reading order."""
    chapter_numbers: dict[str, int]
    in_book: dict[str, int] = field(default_factory=dict)
    in_page: dict[tuple[str, str], int] = field(default_factory=dict)

    def next(self, kind: str, doc: str) -> str:
        self.in_book[kind] = self.in_book.get(kind, 0) + 1
        self.in_page[doc, kind] = self.in_page.get((doc, kind), 0) + 1
        return number(kind, self.in_book[kind], self.chapter_numbers.get(doc), self.in_page[doc, kind])


def load_book(root: Path = ROOT, extra: list[tuple[str, Path]] = ()) -> Book:
    """Read the table of contents, every page's numbered blocks and labels, and the bibliography.

    ``extra`` adds (doc, path) notebooks that are not in the book, as if they followed it.
    """
    toc, config = read_yaml(root / "_toc.yml"), read_yaml(root / "_config.yml")
    docs = [(doc, doc_path(root, doc)) for doc in toc_files(toc)] + list(extra)
    book = Book(docs=[doc for doc, _ in docs])
    chapters = [doc for doc, _ in docs if doc.startswith("chapters/")]
    book.chapter_numbers = {doc: i + 1 for i, doc in enumerate(chapters)}
    numbering = Numbering(book.chapter_numbers)
    for doc, path in docs:
        for text in markdown_sources(path):
            collect_targets(text, doc, book, numbering)
        cells = nbformat.read(path, as_version=4).cells if path.suffix == ".ipynb" else []
        for name, caption in figures(cells, doc):
            book.targets[name] = Target("figure", doc, numbering.next("figure", doc), caption)
        book.definitions += [(str(figure_options(c)["name"]), doc) for c in cells
                             if c.cell_type == "code" and figure_options(c).get("name")]
    sphinx_config = config.get("sphinx", {}).get("config", {})
    book.brackets = {"author_year": ("[", "]"), "author_year_round": ("(", ")")}[
        sphinx_config.get("bibtex_reference_style", "author_year")]
    for bib in config.get("bibtex_bibfiles", []):
        book.citations.update(read_bibliography(root / bib))
    return book


def collect_targets(text: str, doc: str, book: Book, numbering: Numbering) -> None:
    """Record the page title, the numbered blocks, labelled equations and section targets of ``text``."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        heading = re.match(r"^#\s+(.*\S)\s*$", line)
        if heading and doc not in book.targets:
            book.targets[doc] = Target("doc", doc, title=heading.group(1))
        target = TARGET.match(line)
        if target:
            following = next((l for l in lines[i + 1:] if l.strip()), "")
            title = re.sub(r"^#+\s*", "", following).strip()
            book.targets[target["label"]] = Target("section", doc, title=title)
            book.definitions.append((target["label"], doc))
    for block in parse_blocks(text):
        if isinstance(block, Directive):
            kind = block.kind
            if kind and "nonumber" not in block.options:
                book.targets[block.label(doc)] = Target(kind, doc, numbering.next(kind, doc), block.arg)
            if "label" in block.options:
                book.definitions.append((block.options["label"], doc))
            collect_targets("\n".join(block.body), doc, book, numbering)
        elif isinstance(block, Math) and block.label:
            book.targets[block.label] = Target("equation", doc, numbering.next("equation", doc))
            book.definitions.append((block.label, doc))


def figure_options(cell) -> dict:
    """A code cell's myst-nb figure options (``metadata.mystnb.figure``: name, caption), or {}."""
    return (cell.metadata.get("mystnb") or {}).get("figure") or {}


def figure_label(cell, doc: str) -> str:
    return str(figure_options(cell).get("name") or f"{doc}:figure:{cell.get('id')}")


def figures(cells, doc: str) -> list[tuple[str, str]]:
    """``(name, caption)`` of each numbered figure among a notebook page's cells, in order: a
    code cell whose metadata gives a caption (Sphinx numbers captioned figures only)."""
    return [(figure_label(c, doc), str(figure_options(c)["caption"])) for c in cells if c.cell_type == "code" and figure_options(c).get("caption")]


def read_bibliography(path: Path) -> dict[str, tuple[str, str]]:
    """``{key: (authors, year)}`` as the book cites each entry: "Owen", "Nota and Thomas",
    "Schulman et al."; "2022a", "2022b" for works that would read alike (the book's extension
    makes the rule, and this uses it)."""
    from pybtex.database import parse_file

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        from minippo_book import author_year
    finally:
        sys.path.remove(str(ROOT / "book" / "_ext"))
    return author_year(parse_file(str(path)).entries)


# ----------------------------------------------------------------------------- parsing MyST blocks
@dataclass
class Directive:
    name: str
    arg: str
    options: dict[str, str]
    body: list[str]

    def label(self, doc: str) -> str:
        """Its ``:label:``, or a key made of its content (the book numbers unlabelled blocks too)."""
        return self.options.get("label") or f"{doc}:{self.name}:{self.arg}:" + "\n".join(self.body)

    @property
    def kind(self) -> str | None:
        """The counter this directive's number comes from, or None if it has no number."""
        if self.name == "exercise":
            return "exercise"
        if self.name.startswith("prf:") and self.name[4:] in NUMBERED_PROOFS:
            return self.name[4:]
        return None


@dataclass
class Math:
    lines: list[str]
    label: str = ""


@dataclass
class Text:
    lines: list[str]


def parse_blocks(text: str) -> list:
    """Split MyST Markdown into top-level blocks: directives, fenced code, display math (``$$``
    or an amsmath environment at the margin) and runs of other lines. A run ends at a blank line
    followed by a line at the margin (so a list item's indented paragraphs stay with it).
    ``(label)=`` targets and ``%`` comments are dropped."""
    lines, blocks, run, i = text.split("\n"), [], [], 0

    def flush():
        while run and not run[-1].strip():
            run.pop()
        if run:
            blocks.append(Text(run.copy()))
        run.clear()

    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        math_env = re.match(rf"^\\begin\{{({AMSMATH})\*?\}}", line)
        if fence:
            char, width = fence["fence"][0], len(fence["fence"])
            close = next((j for j in range(i + 1, len(lines))
                          if re.match(rf"^ {{0,3}}{re.escape(char)}{{{width},}}\s*$", lines[j])), len(lines))
            directive = DIRECTIVE.match(fence["info"].strip())
            if directive:
                flush()
                options, body = directive_options(lines[i + 1:close])
                blocks.append(Directive(directive["name"], directive["arg"].strip(), options, body))
            elif fence["indent"]:  # code inside a list item: part of the item
                run.extend(lines[i:close + 1])
            else:
                flush()
                blocks.append(Text(lines[i:close + 1]))
            i = close + 1
        elif line.startswith("$$") and not (line.count("$$") >= 2 or EQ_LABEL.search(line[2:])):
            close = next((j for j in range(i + 1, len(lines)) if "$$" in lines[j]), len(lines) - 1)
            flush()
            label = EQ_LABEL.search(lines[close])
            blocks.append(Math(lines[i:close + 1], label["label"] if label else ""))
            i = close + 1
        elif line.startswith("$$"):  # display math on one line
            flush()
            label = EQ_LABEL.search(line)
            blocks.append(Math([line], label["label"] if label else ""))
            i += 1
        elif math_env:
            close = next((j for j in range(i, len(lines))
                          if re.search(rf"\\end\{{{math_env[1]}\*?\}}", lines[j])), len(lines) - 1)
            flush()
            blocks.append(Math(["$$", *lines[i:close + 1], "$$"]))
            i = close + 1
        elif TARGET.match(line) or line.startswith("%"):
            i += 1
        else:
            if line.strip() and not line[0].isspace() and run and not run[-1].strip():
                flush()
            run.append(line)
            i += 1
    flush()
    return blocks


def directive_options(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    """A directive's ``:key: value`` options (or a ``---`` YAML block) and the body after them."""
    if lines and lines[0].strip() == "---":
        end = lines.index("---", 1)
        return {k: str(v) for k, v in (yaml.safe_load("\n".join(lines[1:end])) or {}).items()}, lines[end + 1:]
    options, i = {}, 0
    while i < len(lines):
        option = re.match(r"^:([\w-]+):\s*(.*)$", lines[i])
        if not option:
            break
        options[option[1]] = option[2].strip()
        i += 1
    return options, lines[i:]


# ----------------------------------------------------------------------------- converting
class Unconvertible(ValueError):
    """MyST markup that has no plain-Markdown form here yet: teach this script."""


@dataclass
class Page:
    """One page being converted: where it is and what it refers to."""
    doc: str
    book: Book

    def fail(self, what: str):
        raise Unconvertible(f"{self.doc}: {what}; scripts/reader_edition.py does not know how to "
                            "write it as plain Markdown (extend it, or use other markup)")


def reference_text(page: Page, label: str) -> str:
    """What a reference to ``label`` reads: "Exercise 9.3", "(4.1)", a section's or a page's title;
    a target on another page whose number does not name its chapter names it: "For instructors,
    Exercise 1"."""
    target = page.book.targets.get(label)
    if target is None:
        page.fail(f"a reference to the unknown label {label!r}")
    if target.kind == "doc":
        return target.title
    text = {"section": target.title, "equation": f"({target.number})"}.get(
        target.kind, f"{target.kind.capitalize()} {target.number}")
    if target.doc == page.doc or "." in target.number:  # "Definition 3.6" names its chapter
        return text
    chapter = page.book.chapter_numbers.get(target.doc)
    where = f"Chapter {chapter}" if chapter else page.book.targets[target.doc].title
    return f"{text} of {where}" if target.kind == "equation" else f"{where}, {text}"


def citation(page: Page, keys: str, textual: bool) -> str:
    """``{cite:p}`b,a``` -> "(A, 1998, B, 2001)"; ``{cite:t}`a``` -> "A (1998)" (the brackets of
    ``bibtex_reference_style``)."""
    opening, closing = page.book.brackets
    found = []
    for key in (k.strip() for k in keys.split(",")):
        if key not in page.book.citations:
            page.fail(f"a citation of {key!r}, which is not in the bibliography")
        found.append(page.book.citations[key])
    found.sort()  # the book lists several works in one citation by author
    if textual:
        return ", ".join(f"{authors} {opening}{year}{closing}" for authors, year in found)
    return opening + ", ".join(f"{authors}, {year}" for authors, year in found) + closing


REFERENCE_ROLES = ("ref", "numref", "prf:ref", "eq")


def role_text_and_target(content: str) -> tuple[str, str]:
    """A role's content split into its explicit text and its target: ``text <target>`` or ``target``."""
    explicit = EXPLICIT.match(content)
    return (explicit["text"], explicit["target"]) if explicit else ("", content)


def references(text: str) -> list[str]:
    """The labels that the reference roles ({ref}, {numref}, {prf:ref}, {eq}) of MyST ``text``
    point to, in order, inside directives too; roles inside code are not roles."""
    found = []
    for block in parse_blocks(text):
        if isinstance(block, Directive):
            found += references(block.arg) + references("\n".join(block.body))
        elif isinstance(block, Text):
            found += [role_text_and_target(m["content"])[1].strip()
                      for m in ROLE_OR_CODE.finditer("\n".join(block.lines)) if m["role"] in REFERENCE_ROLES]
    return found


def convert_role(page: Page, role: str, content: str, original: str) -> str:
    text, target = role_text_and_target(content)
    if role.startswith("glue"):
        if role not in ("glue:text", "glue:md"):
            page.fail(f"the role {{{role}}}")
        return original  # filled in by mp.prose.show in the reader's kernel
    if role in REFERENCE_ROLES:
        if text and role != "numref":
            return text
        shown = reference_text(page, target.strip())
        if role == "numref" and text:
            number = shown.split()[-1]
            return text.replace("%s", number).replace("{number}", number)
        return shown
    if role in ("cite", "cite:p", "cite:t"):
        return citation(page, content, textual=role == "cite:t")
    if role == "term":
        return text or content
    if role == "doc":
        if text:
            return text
        doc = content.lstrip("/") if content.startswith("/") else (Path(page.doc).parent / content).as_posix()
        doc = re.sub(r"[^/]+/\.\./", "", doc)
        return reference_text(page, doc)
    if role == "math":
        return f"${content}$"
    if role in ("sub", "sup"):
        return f"<{role}>{content}</{role}>"
    if role in ("kbd", "abbr", "code", "samp", "file", "command"):
        return f"`{content}`" if role != "abbr" else re.sub(r"\s*\(.*\)$", "", content)
    page.fail(f"the role {{{role}}}")


def convert_inline(page: Page, text: str) -> str:
    """Roles to plain text; code spans untouched; glue roles kept for the reader's kernel."""
    def replace(match):
        if match["code"]:
            return match["code"]
        return convert_role(page, match["role"], match["content"], match[0])
    return ROLE_OR_CODE.sub(replace, text)


def one_line_math(text: str) -> str:
    """Every math span on one line, so that a ``> `` quote prefix never lands inside math
    (Jupyter and Colab take math out before parsing Markdown; a prefix inside it would be typeset)."""
    def join(match):
        if match["code"]:
            return match["code"]
        math = match["math"]
        if re.search(r"(?<!\\)%", math):
            raise Unconvertible(f"a TeX comment (%) in {math[:60]!r} cannot be joined onto one line")
        return re.sub(r"\s*\n\s*", " ", math)
    return MATH_OR_CODE.sub(join, text)


def quote(text: str) -> str:
    return "\n".join(f"> {line}" if line.strip() else ">" for line in one_line_math(text).split("\n"))


def html_inline(page: Page, text: str) -> str:
    """A title for an HTML ``<summary>``: roles converted, code spans as ``<code>``."""
    text = convert_inline(page, text).replace("&", "&amp;").replace("<", "&lt;")
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def solution_summary(page: Page, label: str) -> str:
    target = page.book.targets.get(label)
    if target is None or target.kind != "exercise":
        page.fail(f"a solution to {label!r}, which is not an exercise")
    title = f" ({html_inline(page, target.title)})" if target.title else ""
    return f"<summary><b>Solution to {reference_text(page, label)}</b>{title}</summary>"


def details(summary: str, body: str) -> str:
    return f"<details>\n{summary}\n\n{body}\n\n</details>" if body.strip() else f"<details>\n{summary}\n</details>"


def convert_directive(page: Page, d: Directive) -> str | list[str]:
    target = page.book.targets.get(d.label(page.doc)) if d.kind else None
    title = convert_inline(page, d.arg)
    if d.name in ADMONITIONS and d.name != "admonition":  # its argument is the body's first line
        d, title = Directive(d.name, "", d.options, [d.arg, *d.body]), ""
    body = convert_text(page, "\n".join(d.body))
    if d.kind:
        head = f"**{d.kind.capitalize()} {target.number}**" if target else f"**{d.kind.capitalize()}**"
        if "label" in d.options:  # an anchor to link to; minippo.grade finds exercises by it
            head = f'<a id="{d.options["label"]}"></a>{head}'
        head += f" ({title})" if title else ""
        if GLUE.search(body) and not GLUE.search(head):  # the body will be a prose cell: the
            return [quote(head), quote(body)]           # heading stays Markdown, readable unrun
        return quote(f"{head}\n\n{body}")
    if d.name == "prf:proof":
        head = f"*Proof.*{' (' + title + ')' if title else ''}"
        starts_block = re.match(r"^\s*(\d+\.|[-*+]\s|\$\$|```|>)", body)
        return quote(f"{head}{chr(10) * 2 if starts_block else ' '}{body}\n\n∎")
    if d.name == "solution":
        return details(solution_summary(page, d.arg), body)
    if d.name in ADMONITIONS:
        head = title if d.name == "admonition" else d.name.replace("seealso", "see also").capitalize()
        return quote(f"**{head}**\n\n{body}")
    if d.name == "math":
        math = Math(["$$", *d.body, "$$"], d.options.get("label", ""))
        return convert_math(page, math)
    page.fail(f"the directive {{{d.name}}}")


def convert_math(page: Page, math: Math) -> str:
    text = "\n".join(math.lines)
    if math.label:
        tag = f"\\tag{{{page.book.targets[math.label].number}}}"
        text = EQ_LABEL.sub(lambda _: f"{tag}\n$$" if len(math.lines) > 1 else f"{tag} $$", text)
    return text


def convert_units(page: Page, text: str) -> list[str]:
    """``text`` as a list of converted top-level blocks (each a string of plain Markdown)."""
    units = []
    for block in parse_blocks(text):
        if isinstance(block, Directive):
            if block.name in ("solution-start", "solution-end"):
                units.append(block)  # the notebook-level pass folds what follows
            else:
                converted = convert_directive(page, block)
                units += converted if isinstance(converted, list) else [converted]
        elif isinstance(block, Math):
            units.append(convert_math(page, block))
        else:
            lines = block.lines
            if FENCE.match(lines[0]):  # fenced code: verbatim
                units.append("\n".join(lines))
            else:
                if any(EQ_LABEL.search(line) for line in lines):
                    page.fail("a labelled equation that does not start at the margin")
                units.append(convert_inline(page, "\n".join(lines)))
    return units


def convert_text(page: Page, text: str) -> str:
    units = convert_units(page, text)
    if any(isinstance(u, Directive) for u in units):
        page.fail("a gated solution inside another directive")
    return "\n\n".join(units)


# ----------------------------------------------------------------------------- notebooks
PROSE_TITLE = "# @title Text with this run's numbers (run the cell to show it)"
SOLUTION_CODE_TITLE = "# @title Solution to {exercise}: code (click to show)"


def hidden_code_cell(source: str, metadata: dict, cell_id: str):
    """A code cell whose input starts hidden: Colab's form view, Jupyter's ``source_hidden``."""
    metadata = copy.deepcopy(metadata)
    metadata["cellView"] = "form"
    metadata.setdefault("jupyter", {})["source_hidden"] = True
    cell = nbformat.v4.new_code_cell(source, metadata=metadata)
    cell.id = cell_id
    return cell


def prose_cell(markdown: str, metadata: dict, cell_id: str):
    if '"""' in markdown or markdown.endswith("\\"):
        raise Unconvertible(f"prose that cannot go in a raw string: {markdown[:80]!r}")
    source = f'{PROSE_TITLE}\nmp.prose.show(r"""\n{markdown}\n""")'
    return hidden_code_cell(source, metadata, cell_id)


def reader_notebook(nb, doc: str, book: Book):
    """The reader edition of one chapter notebook (outputs cleared, MyST turned into Markdown)."""
    page = Page(doc, book)
    out = copy.deepcopy(nb)
    out.cells = []
    gated = None  # the label of the exercise whose {solution-start} ... {solution-end} we are in
    seen_code = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            seen_code = True
            new = copy.deepcopy(cell)
            new.outputs, new.execution_count = [], None
            if gated:
                title = SOLUTION_CODE_TITLE.format(exercise=reference_text(page, gated))
                new = hidden_code_cell(f"{title}\n{cell.source}", cell.metadata, cell.id)
            out.cells.append(new)
            if figure_options(cell).get("caption"):  # the book's numbered caption, under the figure
                out.cells.append(caption_cell(page, cell))
            continue
        if cell.cell_type != "markdown":
            out.cells.append(copy.deepcopy(cell))
            continue
        units, folded = [], None
        for unit in convert_units(page, cell.source):
            if isinstance(unit, Directive) and unit.name == "solution-start":
                gated, folded = unit.arg, []
            elif isinstance(unit, Directive):  # solution-end
                if folded is not None:
                    units.append(fold_solution(page, gated, folded, 0))
                gated, folded = None, None
            elif folded is not None:
                folded.append(unit)
            else:
                units.append(unit)
        if folded is not None:  # the solution goes on in code cells: say how many
            units.append(fold_solution(page, gated, folded, code_cells_until_end(nb, cell)))
        out.cells += markdown_cells(units, cell, seen_code, page)
    if gated:
        page.fail(f"{{solution-start}} {gated} without its {{solution-end}}")
    return out


def caption_cell(page: Page, cell):
    """A Markdown cell with the figure's number and caption, as the book shows them."""
    label = figure_label(cell, page.doc)
    text = convert_inline(page, str(figure_options(cell)["caption"]))
    new = nbformat.v4.new_markdown_cell(f"*{reference_text(page, label)}.* {text}")
    new.id = f"{cell.id}-caption"
    return new


def code_cells_until_end(nb, start_cell) -> int:
    cells = nb.cells[nb.cells.index(start_cell) + 1:]
    end = next((i for i, c in enumerate(cells) if c.cell_type == "markdown" and "{solution-end}" in c.source),
               len(cells))
    return sum(c.cell_type == "code" for c in cells[:end])


def fold_solution(page: Page, label: str, units: list[str], n_code: int) -> str:
    body = "\n\n".join(units)
    if n_code:
        body += f"\n\n*The solution's code is in the folded cell{'s' if n_code > 1 else ''} below.*"
    return details(solution_summary(page, label), body.strip())


def markdown_cells(units: list[str], cell, seen_code: bool, page: Page) -> list:
    """Consecutive units become one Markdown cell, or, when they quote glued numbers, one prose cell."""
    groups: list[tuple[bool, list[str]]] = []
    for unit in units:
        glued = bool(GLUE.search(unit))
        if groups and groups[-1][0] == glued:
            groups[-1][1].append(unit)
        else:
            groups.append((glued, [unit]))
    cells = []
    for k, (glued, group) in enumerate(groups):
        text, cell_id = "\n\n".join(group), cell.id if k == 0 else f"{cell.id}-{k}"
        if glued and not seen_code:
            page.fail("glued numbers before the setup cell (mp is not imported yet)")
        if glued:
            cells.append(prose_cell(text, cell.metadata, cell_id))
        else:
            new = nbformat.v4.new_markdown_cell(text, metadata=copy.deepcopy(cell.metadata))
            new.id = cell_id
            cells.append(new)
    return cells


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    return sorted((root / "chapters").glob("*.ipynb"))


def edition_path(chapter: Path, out: Path = OUT, root: Path = ROOT) -> Path:
    return out / chapter.resolve().relative_to(root)


def render(chapter: Path, book: Book, root: Path = ROOT) -> str:
    """The reader edition of ``chapter`` as the text of its .ipynb file."""
    doc = chapter.resolve().relative_to(root).with_suffix("").as_posix()
    nb = reader_notebook(nbformat.read(chapter, as_version=4), doc, book)
    nb.metadata["minippo"] = {"generated_from": f"{doc}.ipynb",
                              "generated_by": "scripts/reader_edition.py: edit the chapter, not this file"}
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if any committed notebook differs from a fresh one")
    args = parser.parse_args(argv)
    book = load_book()
    stale = []
    for chapter in chapter_notebooks():
        dst, text = edition_path(chapter), render(chapter, book)
        if dst.exists() and dst.read_text(encoding="utf-8") == text:
            continue
        stale.append(dst)
        if not args.check:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(text, encoding="utf-8")
    if args.check:
        for dst in stale:
            print(f"out of date: {dst.relative_to(ROOT)}")
        if stale:
            print("run `python scripts/reader_edition.py` and commit the result")
        return 1 if stale else 0
    print(f"Wrote {len(stale)} of {len(chapter_notebooks())} reader-edition notebooks to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
