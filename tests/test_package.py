"""The package as a whole: `import minippo` stays light, and the public names are complete."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "; import sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_import_minippo_loads_neither_matplotlib_nor_the_language_models():
    loaded = _modules_after("import minippo")
    assert not any(m == "matplotlib" or m.startswith("matplotlib.") for m in loaded)
    assert not any(m.startswith("minippo.lm") for m in loaded)
    assert "minippo.ppo" in loaded and "minippo.checks" in loaded


def test_lazy_modules_load_on_first_use():
    loaded = _modules_after("import minippo as mp; mp.plotting.dashboard; mp.lm.RLHFConfig")
    assert {"matplotlib", "minippo.plotting", "minippo.lm.rlhf"} <= loaded
    assert "minippo.style" in _modules_after("import minippo as mp; mp.style.book_style")
    import minippo as mp

    assert {"plotting", "style", "lm", "ppo"} <= set(dir(mp))


def test_checks_all_lists_every_checker():
    from minippo import checks

    public = {name for name in vars(checks) if name.startswith("check")}
    assert set(checks.__all__) == public


# A reader has the repository (or only the installed package), not the team's design notes: what
# the package's docstrings, the chapters, the book, the scripts, the benchmarks and the tests point
# to must be there. Paths into the repository (``book/metrics.md``,
# ``chapters/08_capstone_rlhf_code.ipynb``, ...) must exist, and the team's own design and style
# notes, which are not shipped, are never cited (this file names them only in the pattern).
CITED_PATH = re.compile(r"\b((?:book|chapters|minippo|scripts|benchmarks|tests)/[\w./-]*\w\.(?:md|py|ipynb|yml|bib))\b")
SHIPPED_TEXT = {"minippo": ("*.py",), "chapters": ("*.ipynb",), "reader_edition": ("*.ipynb",),
                "book": ("*.md",), "scripts": ("*.py", "*.sh"), "benchmarks": ("*.py", "*.md"),
                "tests": ("*.py",), ".ci": ("run",), ".": ("*.md", "*.py", "*.yml", "*.toml", "*.txt")}


def test_the_repository_cites_only_what_a_reader_has():
    root = pathlib.Path(__file__).resolve().parent.parent
    sources = sorted({path for folder, patterns in SHIPPED_TEXT.items() for pattern in patterns
                      for path in ((root / folder).glob(pattern) if folder == "." else (root / folder).rglob(pattern))
                      if path.resolve() != pathlib.Path(__file__).resolve()})
    assert {root / "README.md", root / "minippo" / "lm" / "sandbox.py", root / "scripts" / "test.sh"} <= set(sources)
    missing, unshipped = [], []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        missing += [f"{path.relative_to(root)}: {p}" for p in CITED_PATH.findall(text)
                    if "NN_" not in p and not (root / p).exists()]  # NN_: a placeholder
        unshipped += [f"{path.relative_to(root)}: {m}" for m in re.findall(r"\b(?:DESIGN|STYLE)\.md\b", text)]
    assert not missing, "paths that are not in the repository:\n" + "\n".join(missing)
    assert not unshipped, "the team's notes are not shipped; cite the book instead:\n" + "\n".join(unshipped)
