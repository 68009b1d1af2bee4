"""The package as a whole: `import minippo` stays light, and the public names are complete."""
import pathlib
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
