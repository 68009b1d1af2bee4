"""The rendered book, built with warnings as errors and checked in a real, offline browser.

A session fixture builds the book exactly as CI does (``jupyter-book build -W -n --keep-going``,
executing every notebook; ``--all`` so that every page is re-read and every warning re-reported)
unless ``_build/html`` already holds a successful build newer than every source file. The
built HTML is served on 127.0.0.1 and driven with Debian's headless Chromium through Playwright
(never ``playwright install``: that downloads a browser, and CI is offline). Every request that
is not to 127.0.0.1 is aborted, so the checks see what a reader without network sees:

- every page in the table of contents loads with no console error and no failed request;
- every image has loaded; math is typeset by the vendored MathJax, with no TeX errors;
- every solution starts collapsed, opens when clicked, and hides its code cells until then;
- each chapter's Colab button opens that chapter's reader edition (reader_edition/chapters/...,
  see scripts/reader_edition.py) from the configured repository.

A screenshot of one chapter is saved to ``_build/screenshots/chapter.png`` for a person to look at.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import http.server
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from book_toc import CONFIG, ROOT, colab_notebook, toc_files

BUILD = ROOT / "_build"
HTML = BUILD / "html"
MARKER = BUILD / ".book_build_ok"  # written after a build that succeeded with zero warnings
SCREENSHOT = BUILD / "screenshots" / "chapter.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BUILD_COMMAND = ["jupyter-book", "build", "-W", "-n", "--keep-going", "--all", "."]
BUILD_TIMEOUT_S = 3600

REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"].get("branch", "main")
OWNER_REPO = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?", REPO_URL).group(1)


DOCS = toc_files()
CHAPTERS = [d for d in DOCS if d.startswith("chapters/")]
PAGES_WITH_MATH = ["book/intro", "book/notation"]  # so the math check always checks something
PAGES_WITH_SOLUTIONS = ["book/instructors"]  # its example exercise; chapters' are checked as they come
SCREENSHOT_DOC = "chapters/04_ppo_clipped_objective"


# ----------------------------------------------------------------------------- build
def source_files() -> list[Path]:
    """Everything the rendered book depends on: its sources and the package the notebooks run."""
    files = [ROOT / "_config.yml", ROOT / "_toc.yml"]
    for folder, pattern in [("book", "*"), ("chapters", "*.ipynb"), ("minippo", "*.py")]:
        files += [p for p in (ROOT / folder).rglob(pattern)
                  if p.is_file() and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts]
    return files


def build_is_fresh() -> bool:
    if not (MARKER.exists() and (HTML / "index.html").exists()):
        return False
    built = MARKER.stat().st_mtime
    return all(p.stat().st_mtime < built for p in source_files())


def sphinx_warnings(log: str) -> list[str]:
    """Sphinx's warnings and errors in a build log (the kernel's own "[IPKernelApp] WARNING | ..."
    lines on stderr are not Sphinx warnings)."""
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)
    return [line for line in log.splitlines()
            if re.search(r"(^|: )(WARNING|ERROR|CRITICAL|SEVERE):", line)]


def native_environment() -> dict:
    """This process's environment without the variables that change a run's numbers: the book is
    built natively with seed offset 0 (nbval executes the chapters under other numerics, see
    ``conftest.py``), so the rendered book shows the numbers of the reference run."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    env["MINIPPO_SEED_OFFSET"] = "0"
    return env


def build_book() -> Path:
    """``_build/html``, built with zero warnings (or reused if fresh); one builder at a time.
    (The session fixture ``built_book`` in ``conftest.py`` calls this once per test session.)"""
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / ".book_build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several people may run the tests in one checkout
        if not build_is_fresh():
            MARKER.unlink(missing_ok=True)
            started = time.time()
            result = subprocess.run(BUILD_COMMAND, cwd=ROOT, capture_output=True, text=True,
                                    timeout=BUILD_TIMEOUT_S, env=native_environment())
            log = result.stdout + "\n" + result.stderr
            (BUILD / "book_build.log").write_text(log, encoding="utf-8")
            warnings = sphinx_warnings(log)
            assert result.returncode == 0 and not warnings, (
                f"`{' '.join(BUILD_COMMAND)}` failed (exit {result.returncode}) with "
                f"{len(warnings)} warning(s):\n" + "\n".join(warnings[:50])
                + f"\n\nlast lines of the log (all in {BUILD / 'book_build.log'}):\n" + log[-4000:])
            assert "build succeeded" in log
            MARKER.write_text(f"built in {time.time() - started:.0f} s with zero warnings\n")
    return HTML


@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1; yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    httpd = BookServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(built_book):
    with serve(built_book) as base:
        yield base


class BookServer(http.server.ThreadingHTTPServer):
    # The default listen backlog is 5; a page opens more connections than that at once, and
    # connections past the backlog wait for TCP to retry them while the machine is busy.
    request_queue_size = 128


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def chromium():
    """Debian's headless Chromium driven by Playwright (the ``browser`` fixture in ``conftest.py``)."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `apt-get install chromium` (scripts/test.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class Visit:
    """One page opened offline, with its console errors, failed and blocked requests.

    The page counts as loaded once the ``load`` event has fired and no request of the page has
    been open for ``QUIET_S``, as this class sees the requests start and finish. (Playwright's
    own "networkidle" means the same, but four times in about twenty-five test runs on a busy
    machine it never came for a page of chapter 7, within 30, 60 and 120 s, while no request of
    the page was open: the last failure listed none.) A page that has not settled after
    ``SETTLE_S`` is opened once more in a fresh context; a second page that does not settle
    fails the test, naming the requests both openings still waited for."""

    SETTLE_S = 60
    QUIET_S = 0.5

    def __init__(self, browser, base: str, doc: str, viewport: dict | None = None, query: str = ""):
        self.base = base
        self.url = f"{base}/{doc}.html{query}"
        first_opening: list[str] = []  # what an abandoned first opening waited for
        for attempt in (1, 2):
            self.errors: list[str] = []
            self.blocked: list[str] = []
            self.failed: list[str] = []
            self.open: dict = {}  # request -> (url, when it started)
            self.context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900},
                                               service_workers="block")
            self.page = self.context.new_page()
            self.page.route("**/*", self._route)
            self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
            self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
            self.page.on("request", lambda r: self.open.__setitem__(r, (r.url, time.monotonic())))
            self.page.on("requestfinished", lambda r: self.open.pop(r, None))
            self.page.on("requestfailed", self._request_failed)
            self.page.on("response", lambda r: self.failed.append(f"{r.url} (HTTP {r.status})")
                         if r.status >= 400 else None)
            try:
                self.response = self.page.goto(self.url, wait_until="load", timeout=120_000)
                self._wait_until_quiet()
                break
            except PlaywrightTimeout:
                now = time.monotonic()
                waiting = [f"{url} (open {now - t:.0f} s)" for url, t in self.open.values()]
                self.context.close()
                if attempt == 2:
                    pytest.fail(f"{self.url} did not settle in {self.SETTLE_S} s, twice; the first "
                                f"opening waited for {first_opening}, the second for {waiting}")
                first_opening = waiting
        self.wait_for_math()

    def _wait_until_quiet(self):
        """Return once no request has been open for ``QUIET_S``; raise Playwright's timeout
        after ``SETTLE_S``. (Waiting on the page lets Playwright deliver the request events.)"""
        deadline, quiet_since = time.monotonic() + self.SETTLE_S, None
        while time.monotonic() < deadline:
            if self.open:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= self.QUIET_S:
                return
            self.page.wait_for_timeout(50)
        raise PlaywrightTimeout(f"requests still open after {self.SETTLE_S} s")

    def _request_failed(self, request):
        self.open.pop(request, None)
        self.failed.append(f"{request.url} ({request.failure})")

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.base + "/") or url == self.base or url.startswith("data:") \
                or url.startswith("blob:") or url == "about:blank":
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def wait_for_math(self):
        self.page.evaluate("""async () => {
            if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
                await MathJax.startup.promise;
            }
        }""")

    def close(self):
        self.context.close()


@pytest.fixture(scope="session")
def visited(browser, server):
    """Pages opened once and shared by the read-only checks (opening a page takes a second)."""
    cache: dict[str, Visit] = {}

    def open_(doc):
        if doc not in cache:
            cache[doc] = Visit(browser, server, doc)
        return cache[doc]

    yield open_
    for v in cache.values():
        v.close()


@pytest.fixture
def visit(browser, server):
    """A freshly opened page, for checks that click on it."""
    opened = []

    def open_(doc):
        v = Visit(browser, server, doc)
        opened.append(v)
        return v

    yield open_
    for v in opened:
        v.close()


# ----------------------------------------------------------------------------- the build
def test_build_has_zero_warnings(built_book):
    assert MARKER.exists()
    assert (built_book / "index.html").exists()
    for doc in DOCS:
        assert (built_book / f"{doc}.html").exists(), f"{doc} in _toc.yml was not built"


def test_mathjax_is_vendored_and_configured(built_book):
    assert CONFIG["sphinx"]["config"]["mathjax_path"] == "mathjax/tex-chtml-full.js"
    assert (ROOT / "book" / "_static" / "mathjax" / "tex-chtml-full.js").exists()
    fonts = list((built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) >= 20
    intro = (built_book / "book" / "intro.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', intro, flags=re.I)
    assert scripts and all(s.startswith("../_static/mathjax/") for s in scripts), scripts
    assert "cdn.jsdelivr" not in intro and "unpkg.com/mathjax" not in intro


# ----------------------------------------------------------------------------- every page
@pytest.mark.parametrize("doc", DOCS)
def test_page_loads_offline_without_errors(visited, doc):
    v = visited(doc)
    assert v.response is not None and v.response.ok, f"{doc}: HTTP {v.response and v.response.status}"
    assert not v.errors, f"{doc}: console errors: {v.errors}"
    assert not v.failed, f"{doc}: failed requests: {v.failed}"
    assert not v.blocked, f"{doc}: the page tried to reach the network: {v.blocked}"
    title = v.page.locator("main h1").first.inner_text()
    assert title.strip(), f"{doc} has no title"


@pytest.mark.parametrize("doc", DOCS)
def test_every_image_has_loaded(visited, doc):
    v = visited(doc)
    broken = v.page.evaluate("""async () => {
        const images = [...document.images];
        images.forEach(img => { img.loading = 'eager'; });
        await Promise.all(images.map(img => img.complete ? null : img.decode().catch(() => null)));
        return images.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src);
    }""")
    assert not broken, f"{doc}: images that did not load: {broken}"


@pytest.mark.parametrize("doc", DOCS)
def test_math_is_typeset(visited, doc):
    v = visited(doc)
    n_math = v.page.locator(".math").count()
    if doc in PAGES_WITH_MATH:
        assert n_math > 0, f"{doc} should contain math"
    if n_math == 0:
        return
    n_typeset = v.page.locator("mjx-container").count()
    assert n_typeset >= n_math, f"{doc}: {n_math} math elements but {n_typeset} typeset by MathJax"
    errors = v.page.locator("mjx-merror").all_inner_texts()
    assert not errors, f"{doc}: MathJax could not typeset: {errors}"
    # The TeX source is gone from the page: what the reader sees is typeset output.
    raw = v.page.evaluate("""() => [...document.querySelectorAll('.math')]
        .filter(el => !el.querySelector('mjx-container')).map(el => el.textContent.slice(0, 80))""")
    assert not raw, f"{doc}: math left untypeset: {raw}"


@pytest.mark.parametrize("doc", DOCS)
def test_solutions_start_collapsed_and_open_on_click(visited, visit, doc):
    v = visited(doc)
    page = v.page
    solutions = page.locator("div.solution")
    n = solutions.count()
    if doc in PAGES_WITH_SOLUTIONS:
        assert n > 0, f"{doc} should contain a solution"
    # Code cells that belong to a solution are hidden until their solution is opened.
    tagged = page.locator(".tag_solution")
    visible = [i for i in range(tagged.count()) if tagged.nth(i).is_visible()]
    assert not visible, (
        f"{doc}: {len(visible)} cell(s) tagged `solution` visible before their solution is opened "
        "(outside {solution-start} ... {solution-end}?)")
    for i in range(n):
        solution = solutions.nth(i)
        body = solution.locator(":scope > section, :scope > :not(.admonition-title)").first
        assert body.count() == 1, f"{doc}: solution {i} has no body"
        assert not body.is_visible(), f"{doc}: solution {i} is not collapsed"
        button = solution.locator("button.toggle-button").first
        assert button.count() == 1, f"{doc}: solution {i} has no toggle button"
    if n == 0:
        return
    v = visit(doc)  # a fresh copy of the page to click on
    solutions = v.page.locator("div.solution")
    for i in range(n):
        solution = solutions.nth(i)
        solution.locator("button.toggle-button").first.click()
        body = solution.locator(":scope > section, :scope > :not(.admonition-title)").first
        body.wait_for(state="visible", timeout=5000)
    assert not v.errors, f"{doc}: console errors while opening solutions: {v.errors}"


@pytest.mark.parametrize("doc", CHAPTERS)
def test_colab_button_opens_this_chapter(visited, doc):
    v = visited(doc)
    hrefs = v.page.locator("a[href*='colab.research.google.com']").evaluate_all(
        "els => els.map(el => el.getAttribute('href'))")
    expected = f"https://colab.research.google.com/github/{OWNER_REPO}/blob/{BRANCH}/{colab_notebook(doc)}"
    assert hrefs, f"{doc}: no Colab launch button"
    assert set(hrefs) == {expected}, f"{doc}: Colab links {hrefs}, expected {expected}"
    assert (ROOT / colab_notebook(doc)).exists(), f"{colab_notebook(doc)} is missing: run scripts/reader_edition.py"
    # path_to_book points the launch buttons at the reader edition; the buttons that would take
    # it as the path of the page's source must stay off.
    assert not CONFIG["html"].get("use_edit_page_button") and not CONFIG["html"].get("use_source_button")


def test_bibliography_lists_the_references(visited):
    v = visited("book/bibliography")
    n_entries = v.page.locator(".citation, dl.citation > dt, div.citation").count()
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    n_bib = len(re.findall(r"^@\w+\{", bib, flags=re.M))
    assert n_entries >= n_bib - 1, f"{n_entries} entries shown, {n_bib} in references.bib"
    assert "proximal policy optimization algorithms" in v.page.inner_text("main").lower()


def test_no_python_warnings_in_rendered_outputs(built_book):
    """A warning printed by a notebook (a deprecation, a missing optional package) is a blemish
    on every reader's page; fix its cause rather than hide it."""
    found = {}
    for doc in CHAPTERS:
        html = (built_book / f"{doc}.html").read_text(encoding="utf-8")
        for block in re.findall(r'<div class="output stderr[^"]*">(.*?)</div>\s*</div>', html, flags=re.S):
            text = re.sub(r"<[^>]+>", "", block)
            hits = re.findall(r"\w*Warning: [^\n]*", text)
            if hits:
                found.setdefault(doc, []).extend(h[:160] for h in hits)
    assert not found, f"Python warnings shown in the rendered book: {found}"


def test_screenshot_of_a_chapter(visited):
    v = visited(SCREENSHOT_DOC)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    v.page.screenshot(path=str(SCREENSHOT), full_page=False)
    assert SCREENSHOT.stat().st_size > 10_000


# ----------------------------------------------------------------------------- reference pages
#: Every configuration dataclass and the module that defines it; the hyperparameter page has a
#: section for each.
CONFIG_CLASSES = [
    ("minippo.training", "TrainingConfig"), ("minippo.reinforce", "ReinforceConfig"), ("minippo.a2c", "A2CConfig"),
    ("minippo.trpo", "TRPOConfig"), ("minippo.ppo", "PPOConfig"),
    ("minippo.lm.model", "GPTConfig"), ("minippo.lm.codetask", "CodeTaskConfig"),
    ("minippo.lm.sft", "SFTConfig"), ("minippo.lm.reward_model", "RewardModelConfig"),
    ("minippo.lm.rlhf", "RLHFConfig"), ("minippo.lm.alternatives", "RLOOConfig"),
    ("minippo.lm.alternatives", "GRPOConfig"), ("minippo.lm.alternatives", "DPOConfig"),
]


def hyperparameter_tables() -> dict[str, dict[str, str]]:
    """``{config name: {field: default as written}}`` from book/hyperparameters.md."""
    text = (ROOT / "book" / "hyperparameters.md").read_text(encoding="utf-8")
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        heading = re.match(r"#{2,4}\s+`(\w+)`\s*$", line)
        if heading:
            current = tables.setdefault(heading.group(1), {})
            continue
        row = re.match(r"\|\s*`(\w+)`\s*\|\s*`([^`]*)`\s*\|", line)
        if row and current is not None:
            assert row.group(1) not in current, f"{row.group(1)} listed twice"
            current[row.group(1)] = row.group(2)
    return tables


def written_default_matches(written: str, default) -> bool:
    import ast
    import dataclasses

    if dataclasses.is_dataclass(default):
        return written == f"{type(default).__name__}()" and default == type(default)()
    try:
        value = ast.literal_eval(written)
    except (ValueError, SyntaxError):
        return False
    if isinstance(default, bool) or default is None or isinstance(value, bool):
        return value is default
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple)) and tuple(value) == tuple(default)
    return type(value) in (int, float) and value == default if isinstance(default, (int, float)) \
        else value == default


def suggested_row(field, default) -> str:
    import dataclasses

    shown = f"{type(default).__name__}()" if dataclasses.is_dataclass(default) else (
        f"{default:_}" if isinstance(default, int) and not isinstance(default, bool) and abs(default) >= 10_000
        else repr(default))
    return f"| `{field.name}` | `{shown}` | ... | ... |"


@pytest.mark.parametrize("module,name", CONFIG_CLASSES, ids=[n for _, n in CONFIG_CLASSES])
def test_hyperparameter_page_matches_the_code(module, name):
    """Every field of every config appears on book/hyperparameters.md with its actual default."""
    import dataclasses
    import importlib

    cls = getattr(importlib.import_module(module), name)
    tables = hyperparameter_tables()
    assert name in tables, f"book/hyperparameters.md has no section ### `{name}`"
    table = tables[name]
    problems = []
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if field.name not in table:
            problems.append(f"missing field, add: {suggested_row(field, default)}")
        elif not written_default_matches(table[field.name], default):
            problems.append(f"{field.name}: page says `{table[field.name]}`, code says "
                            f"{default!r}; fix: {suggested_row(field, default)}")
    names = {f.name for f in dataclasses.fields(cls)}
    problems += [f"{extra}: on the page but not a field of {name}" for extra in table if extra not in names]
    assert not problems, f"book/hyperparameters.md is out of date for {module}.{name}:\n" + "\n".join(problems)


def test_hyperparameter_page_covers_every_config_class():
    """A new config dataclass in minippo needs a section (and an entry in CONFIG_CLASSES)."""
    found = set()
    for path in (ROOT / "minippo").rglob("*.py"):
        found |= set(re.findall(r"^@dataclass\(frozen=True\)\s*\nclass (\w+Config)\b",
                                path.read_text(encoding="utf-8"), flags=re.M))
    listed = {name for _, name in CONFIG_CLASSES}
    assert found <= listed, f"config classes missing from the hyperparameter page: {sorted(found - listed)}"


def test_metric_dictionary_lists_every_metric():
    """Every metric name minippo logs ("group/name" keys in the package) is in the dictionary."""
    page = (ROOT / "book" / "metrics.md").read_text(encoding="utf-8")
    on_page = set(re.findall(r"`([a-z][a-z0-9]*/[a-z_0-9]+)`", page))  # a2c/... too
    logged = set()
    for path in (ROOT / "minippo").rglob("*.py"):
        logged |= set(re.findall(r"[\"']((?:rollout|time|ppo|rlhf|code|trpo|gen|grpo|rm|dpo|sft|rloo|a2c|reinforce)"
                                 r"/[a-z_0-9]+)[\"']", path.read_text(encoding="utf-8")))
    design = ["rollout/episodic_return", "rollout/episode_length", "ppo/policy_loss", "ppo/value_loss",
              "ppo/entropy", "ppo/kl_divergence", "ppo/clip_fraction", "ppo/ratio_mean", "ppo/ratio_std",
              "ppo/explained_variance", "ppo/value_pred_mean", "ppo/mean_advantage", "ppo/mean_reward",
              "ppo/reward_std", "time/steps_per_second", "rlhf/kl_to_ref", "rlhf/kl_coef", "rlhf/score",
              "rlhf/non_score_reward", "code/syntax_success_rate", "code/avg_test_pass_rate",
              "code/quality_score"]
    missing = sorted((logged | set(design)) - on_page)
    assert not missing, f"book/metrics.md does not explain: {missing}"
