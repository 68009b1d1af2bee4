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
# the package's docstrings and the chapters point to must be there. Paths into the repository
# (``book/metrics.md``, ``chapters/08_capstone_rlhf_code.ipynb``, ...) must exist, and the
# team's own DESIGN.md and STYLE.md, which are not shipped, are never cited.
CITED_PATH = re.compile(r"\b((?:book|chapters|minippo|scripts|benchmarks|tests)/[\w./-]*\w\.(?:md|py|ipynb|yml|bib))\b")


def test_the_package_and_the_chapters_cite_only_what_a_reader_has():
    root = pathlib.Path(__file__).resolve().parent.parent
    sources = sorted((root / "minippo").rglob("*.py")) + sorted((root / "chapters").glob("*.ipynb"))
    missing, unshipped = [], []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        missing += [f"{path.relative_to(root)}: {p}" for p in CITED_PATH.findall(text) if not (root / p).exists()]
        unshipped += [f"{path.relative_to(root)}: {m}" for m in re.findall(r"\b(?:DESIGN|STYLE)\.md\b", text)]
    assert not missing, "paths that are not in the repository:\n" + "\n".join(missing)
    assert not unshipped, "the team's notes are not shipped; cite the book instead:\n" + "\n".join(unshipped)
