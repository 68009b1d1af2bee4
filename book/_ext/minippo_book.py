"""Two small fixes the book needs on top of Jupyter Book 1 (a local Sphinx extension).

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
"""
from __future__ import annotations

import os

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx_exercise.nodes import solution_node


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


MYST_GLUE_VARIABLE = "MINIPPO_MYST_GLUE"  # minippo.prose.MYST_GLUE_VARIABLE (a test checks)


def setup(app):
    os.environ[MYST_GLUE_VARIABLE] = "1"
    app.setup_extension("sphinx_exercise")
    app.add_config_value("minippo_hide_solutions", False, "env")
    app.connect("config-inited", take_over_hide_solutions, priority=100)
    app.connect("html-page-context", dedupe_scripts)
    app.add_transform(RemoveSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
