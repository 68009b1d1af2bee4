"""The book's configuration and table of contents, and the book's scripts, loaded once for the tests."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))


def load_script(name: str):
    """``scripts/<name>.py`` as a module (registered under ``name``, so scripts can import it)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


reader_edition = load_script("reader_edition")


def toc_files(toc: dict = TOC) -> list[str]:
    """Every ``file:`` of the table of contents, in reading order (root first)."""
    return reader_edition.toc_files(toc)


def colab_notebook(doc: str) -> str:
    """The notebook, relative to the repository root, that the Colab button of page ``doc`` opens
    (sphinx-book-theme: ``<path_to_book>/<doc>.ipynb``)."""
    prefix = CONFIG["repository"].get("path_to_book", "").strip("/")
    return f"{prefix}/{doc}.ipynb" if prefix else f"{doc}.ipynb"
