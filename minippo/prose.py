"""Numbers from the reader's run, pasted into the chapter's prose.

The chapters never type a number they computed: a code cell calls ``mp.glue("name", value)`` and
the prose says ``{glue:text}`name:.2f``` (myst-nb's syntax). Two places read those values:

* **The rendered book.** myst-nb executes the chapters and pastes each value where the prose
  names it. It reads them from special outputs written by ``myst_nb.glue``, which ``glue`` emits
  only when ``$MINIPPO_MYST_GLUE`` is set (the book's Sphinx extension, ``book/_ext``, sets it for
  the kernels of the build; ``scripts/robustness.py`` for its runs). Elsewhere those outputs are
  not needed, and some front ends show them as "no renderer for this MIME type".
* **Jupyter, Colab and VS Code**, through the reader edition (``scripts/reader_edition.py``): a
  paragraph that quotes numbers becomes a code cell with hidden input, ``mp.prose.show(...)``,
  which shows the paragraph as Markdown with the values of *this* kernel's run, formatted exactly
  as the book formats them (:func:`format_plain_text` is myst-nb's rule). A paragraph shown
  before the cell that computes its numbers shows ``[…]`` there, and fills in when they are glued.
"""
from __future__ import annotations

import os
import re
from ast import literal_eval

import numpy as np
import torch

__all__ = ["glue", "glued", "format_plain_text", "fill", "show", "source", "MYST_GLUE_VARIABLE"]

#: Set (to anything non-empty) in the environment of a kernel whose glued values myst-nb reads.
MYST_GLUE_VARIABLE = "MINIPPO_MYST_GLUE"

#: The values glued in this kernel: name -> MIME bundle (``{"text/plain": ..., ...}``), the same
#: form myst-nb stores, so the prose is formatted from the same text the book formats.
glued: dict[str, dict] = {}

#: Paragraphs shown by :func:`show` in this kernel: (Markdown, names it quotes, display handle).
_shown: list[tuple[str, set[str], object]] = []

#: A glue role: ``{glue:text}`name:format```, ``{glue:md}`name```. The name may not contain ``:``.
GLUE_ROLE = re.compile(r"\{glue:(?P<kind>text|md)\}`(?P<name>[^`:]+)(?::(?P<spec>[^`]*))?`")

#: What a paragraph shows in place of a number not computed yet.
NOT_YET = "[…]"


def mime_bundle(value) -> dict:
    """The MIME bundle IPython would display for ``value`` (``text/plain`` = its repr)."""
    try:
        from IPython.core.formatters import format_display_data
    except ImportError:  # plain Python: the repr is what IPython would show for numbers and text
        return {"text/plain": repr(value)}
    return dict(format_display_data(value)[0])


def glue(name: str, value, display: bool = False) -> None:
    """Hand a number the run computed to the chapter's prose: ``{glue:text}`name:.2f```.

    Records ``value`` in :data:`glued`, refreshes any paragraph already shown that quotes it, and,
    for the book build, hands it to myst-nb too.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()  # numpy 2 scalars would otherwise break the glue role
    glued[name] = mime_bundle(value)
    if os.environ.get(MYST_GLUE_VARIABLE):
        from myst_nb import glue as myst_glue
        myst_glue(name, value, display=display)
    elif display:
        from IPython.display import display as show
        show(value)
    for markdown, names, handle in _shown:
        if name in names:
            handle.update(_markdown(fill(markdown)))


def format_plain_text(text: str, spec: str) -> str:
    """Format a value's ``text/plain`` with a format spec, as myst-nb's ``{glue:text}`` does.

    The text is read back with ``literal_eval`` (which also drops a string's quotes); the last
    character of ``spec`` decides the type (``d`` an int, ``f``/``%``/``g``... a float, ``s`` a str).
    """
    try:
        value = literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if spec == "":
        return str(value)
    kind = spec[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, spec)


def fill(markdown: str, values: dict[str, dict] | None = None) -> str:
    """``markdown`` with every glue role replaced by its value from ``values`` (default :data:`glued`).

    ``{glue:text}`` formats ``text/plain`` with the role's spec (``s`` when it has none);
    ``{glue:md}`` pastes ``text/markdown``. A name not glued yet reads ``[…]``.
    """
    values = glued if values is None else values

    def paste(match):
        bundle = values.get(match["name"])
        if bundle is None:
            return NOT_YET
        if match["kind"] == "md":
            return bundle.get("text/markdown", bundle["text/plain"])
        return format_plain_text(bundle["text/plain"], "s" if match["spec"] is None else match["spec"])

    return GLUE_ROLE.sub(paste, markdown)


def _markdown(text: str):
    from IPython.display import Markdown
    return Markdown(text)


def show(markdown: str) -> None:
    """Show ``markdown`` (a paragraph of the chapter) with this run's glued numbers filled in."""
    from IPython.display import display
    handle = display(_markdown(fill(markdown)), display_id=True)
    if handle is not None:  # None outside IPython, where there is nothing to refresh later
        _shown.append((markdown, {m["name"] for m in GLUE_ROLE.finditer(markdown)}, handle))


def source(obj, docstring: bool = True, lines: slice | None = None):
    """The source of ``obj`` (a function, class or module of the package) as a Python code block,
    which the book, Jupyter and Colab show highlighted (``print(inspect.getsource(...))`` shows
    plain text). ``docstring=False`` leaves out a function's docstring; ``lines`` picks lines of
    what is left (``slice(10, 25)``). The last expression of a cell, it displays itself."""
    import ast
    import inspect
    import textwrap

    text = textwrap.dedent(inspect.getsource(obj))
    rows = text.splitlines()
    if not docstring:
        body = getattr(ast.parse(text).body[0], "body", [])
        first = body[0] if body else None
        if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                and isinstance(first.value.value, str):
            del rows[first.lineno - 1:first.end_lineno]
    if lines is not None:
        rows = rows[lines]
    return _markdown("```python\n" + "\n".join(rows).rstrip() + "\n```")
