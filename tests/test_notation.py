"""One symbol per meaning, book-wide (issue 13): the notation page lists every symbol the book
uses, each once, and notations the book retired do not come back.

- Every Greek letter in the math of a chapter, of a book page or of a minippo docstring appears
  on ``book/notation.md`` (a symbol the reader cannot look up is a symbol used without a
  definition).
- The first column of the notation page's tables names each symbol once.
- Retired notations (:data:`RETIRED`) occur nowhere: the probability ratio is
  :math:`\\rho_t(\\theta)` (:math:`r_t` is always a reward), a trajectory's return is
  :math:`G_0`, the conjugate-gradient damping is :math:`\\eta` (:math:`\\lambda` is GAE's), epochs
  are :math:`E` (:math:`K` counts a bandit's arms), and a score is never :math:`s(\\cdot)` (which
  would clash with the state :math:`s_t`).
- Every axis letter in a shape comment of ``minippo`` (``# (T, B)``) is a letter of the notation
  page's "Shapes" table, and every letter of that table is used.
"""
from __future__ import annotations

import ast
import re

import nbformat
import pytest

from book_toc import ROOT

PAGE = ROOT / "book" / "notation.md"
GREEK = ("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu "
         "xi pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta "
         "Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega").split()
MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$|:math:`([^`]+)`|\.\. math::(.+?)(?:\n\s*\n|$)", re.S)

#: pattern -> what to write instead
RETIRED = {
    r"(?<![\\a-zA-Z])r_t\s*\(\s*\\theta\s*\)": "the ratio is \\rho_t(\\theta); r_t is a reward",
    r"(?<![\\a-zA-Z_])R\s*\(\s*\\tau\s*\)": "a trajectory's return is G_0",
    r"damping[^\n]{0,40}\\lambda|\\lambda\s*I\s*\)": "the CG damping is \\eta (\\lambda is GAE's)",
    r"(?<![\\a-zA-Z_])s\s*\(\s*x\s*,\s*y\s*\)": "a score is r_psi(x, y), r^\\star(x, y) or r_code(x, y)",
    r"\$K\$ (epochs|passes)|epochs \$K\$": "epochs are E; K counts a bandit's arms",
}

NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))
MODULES = sorted((ROOT / "minippo").rglob("*.py"))

def greek_in(text: str) -> set[str]:
    found = set()
    for match in MATH.finditer(text):
        math = next(g for g in match.groups() if g is not None)
        found |= {g for g in GREEK if re.search(rf"\\{g}(?![a-zA-Z])", math)}
    return found


def notebook_markdown(path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    return "\n\n".join(c.source for c in cells if c.cell_type == "markdown")


def docstrings(path) -> str:
    tree = ast.parse(path.read_text())
    nodes = [tree, *(n for n in ast.walk(tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return "\n\n".join(ast.get_docstring(n, clean=False) or "" for n in nodes)


def page_symbols() -> list[str]:
    """The first cell of every table row on the notation page (header rows excluded)."""
    rows = [line for line in PAGE.read_text().splitlines() if line.startswith("| ")]
    firsts = [row.split(" | ")[0][2:].strip() for row in rows]
    return [f for f in firsts if f not in {"Symbol", "Letter"} and not set(f) <= {"-", "|"}]


ON_PAGE = greek_in(PAGE.read_text())


def check(text: str, where: str):
    missing = greek_in(text) - ON_PAGE
    assert not missing, f"{where} uses {sorted(missing)}, which book/notation.md does not list"
    for pattern, instead in RETIRED.items():
        hit = re.search(pattern, text)
        assert not hit, f"{where}: {hit.group(0)!r} is retired notation: {instead}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_notation(path):
    check(notebook_markdown(path), path.name)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_page_notation(path):
    check(path.read_text(), f"book/{path.name}")


def test_docstring_notation():
    for path in MODULES:
        check(docstrings(path), str(path.relative_to(ROOT)))


def test_each_symbol_listed_once():
    symbols = page_symbols()
    assert len(symbols) > 40, "the notation page's tables were not read"
    repeated = {s for s in symbols if symbols.count(s) > 1}
    assert not repeated, f"listed more than once on the notation page: {sorted(repeated)}"


def test_the_checks_can_fail():
    """Each rule catches what it is for (a check that cannot fail proves nothing)."""
    assert greek_in(r"text $\omega_t$ and :math:`\zeta`") == {"omega", "zeta"}
    assert greek_in("$$\n\\lambda\\mu\n$$") == {"lambda", "mu"}
    assert "lambda" not in greek_in(r"$\lambdax$ is not lambda")
    for bad in [r"$r_t(\theta)$", r"$R(\tau)$", r"damping $\lambda$", r"damping: :math:`\lambda`", r"$(F + \lambda I)$",
                r"$s(x, y)$", r"$K$ epochs"]:
        with pytest.raises(AssertionError):
            check(bad, "example")
    for good in [r"$\rho_t(\theta)$", r"$r_t$", r"$G_0$", r"$(F + \eta I)$", r"$r_\psi(x, y)$",
                 r"$s_t$", r"$E$ epochs"]:
        check(good, "example")
    with pytest.raises(AssertionError):
        check(r"$\varpi$", "example")  # not on the page


# ---------------------------------------------------------------------------- shape comments
SHAPE_COMMENT = re.compile(r"#\s*(\((?:[^()]|\([^()]*\))*\))")
_ATOM = r"(?:[A-Za-z][A-Za-z0-9']*|\d+|len\([^()]*\))"
SHAPE_AXIS = re.compile(rf"^\s*{_ATOM}(?:\s*[-+*/]\s*{_ATOM})*\s*$")


def shape_letters(text: str) -> dict[str, int]:
    """Axis letters of the shape comments in ``text``, each with the first line it is on.

    A shape comment is ``# (...)`` whose comma-separated parts are each a letter, a number,
    ``len(...)`` or arithmetic of them (``(B, P + R)``); ``# (the pool)`` is prose, not a shape.
    A lower-case name inside arithmetic with an axis letter (the ``k`` of ``T - k``) is a loop
    variable, not an axis."""
    letters: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        for match in SHAPE_COMMENT.finditer(line):
            parts = [p for p in match.group(1)[1:-1].split(",") if p.strip()]
            if not parts or not all(SHAPE_AXIS.match(p) for p in parts):
                continue
            for part in parts:
                names = re.findall(r"[A-Za-z][A-Za-z0-9']*", re.sub(r"len\([^()]*\)", "", part))
                arithmetic = len(names) > 1 or re.search(r"[-+*/]", part)
                for name in names:
                    if arithmetic and name[0].islower() and any(n[0].isupper() for n in names):
                        continue
                    letters.setdefault(name, number)
    return letters


def table_letters() -> set[str]:
    section = PAGE.read_text().split("## Shapes", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row.split(" | ")[0])}


def test_shape_letters_are_on_the_notation_page():
    table = table_letters()
    assert {"T", "B", "N"} <= table, "the notation page's Shapes table was not read"
    used: set[str] = set()
    for path in MODULES:
        letters = shape_letters(path.read_text())
        used |= set(letters)
        unknown = {f"{name} (line {line})" for name, line in letters.items() if name not in table}
        assert not unknown, (f"{path.relative_to(ROOT)}: shape comments use {sorted(unknown)}, "
                             "which the Shapes table of book/notation.md does not list")
    assert table <= used, f"the Shapes table lists letters no shape comment uses: {sorted(table - used)}"


def test_the_shape_scanner_can_fail():
    assert shape_letters("x = f(y)  # (T, B)\nz = g()  # (B, P + R), masked") == {"T": 1, "B": 1, "P": 2, "R": 2}
    assert shape_letters("a = alive[:rows]  # (T-k, B)") == {"T": 1, "B": 1}
    assert shape_letters("h = h  # (b, R)") == {"b": 1, "R": 1}  # a lone lower-case axis is an axis
    assert shape_letters("p = s[i]  # (the pool)\nq = 1  # (candidates see no clock)") == {}
    assert shape_letters("r = x  # (Q, len(ns))") == {"Q": 1}

