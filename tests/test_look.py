"""What a reader sees, page by page, at a desktop's 1280 px and a phone's 390 px (issue 17).

Every page of the table of contents is opened in Debian's headless Chromium (offline, as in
``test_book.py``) at both widths and measured once (:func:`measure`). The checks:

- **Equations**: a display equation wider than its box scrolls inside it (``overflow-x: auto``)
  and shows the cue, a faded cut edge (``minippo-more-right``, set by ``book/_static/minippo.js``);
  its box stays in the column; an equation number never overlaps its formula.
- **Tables and wide outputs**: a table wider than the column sits in a box that scrolls.
- **Images**: every image in the article is shown at >= 60% of the width it was drawn at (its
  natural width: ``minippo.style`` draws at 100 dpi, so natural px are drawn px) and has alt text
  that says something (not empty, not a file name or hash).
- **Chapter content at 1280 px**: no table or code block needs sideways scrolling on a desktop.
- **Outputs**: no traceback; no console error while the page loads.
- **Navigation**: one top bar and one search box; on a phone the visible sidebar toggle opens
  the table of contents (the chapter list is then visible) and it closes again.
- **Numbers and labels**: chapter pages number per chapter ("Exercise 9.3", "Figure 5.2", "(4.1)");
  the bibliography's labels read as the text cites ("Schulman et al., 2017"); every chapter ends
  with the section :data:`CHAPTER_ENDING`; the glossary's Chinese is drawn in the shipped font;
  search ranks the metric dictionary first for a metric's name.

Screenshots of two chapters at both widths (top of the page, and the first figure) go to
``_build/screenshots/look-<chapter>-<width>[-figure].png`` for a person to look at.
"""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import nbformat
import pytest

from book_toc import ROOT
from test_book import BUILD, CHAPTERS, DOCS, Visit, server  # noqa: F401 (the fixture)

WIDTHS = {"desktop": 1280, "phone": 390}
SCREENSHOT_CHAPTERS = ["chapters/04_ppo_clipped_objective", "chapters/05_ppo_in_practice"]
SCREENSHOTS = BUILD / "screenshots"
MIN_SHOWN_FRACTION = 0.60
CHAPTER_ENDING = "What this chapter showed"  # the last "##" section of every chapter
THEMES = {"sphinx-book-theme": "1.1.4", "pydata-sphinx-theme": "0.15.4"}  # requirements.txt


# ----------------------------------------------------------------------------- measuring a page
MEASURE = r"""async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null : img.decode().catch(() => null)));
  if (window.minippoMarkScrollers) window.minippoMarkScrollers();
  const article = document.querySelector('article.bd-article') || document.querySelector('main');
  const column = article.getBoundingClientRect();
  const visible = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const scroller = (el, stop) => { for (let p = el; p && p !== stop; p = p.parentElement)
    if (scrolls(p) && p.clientWidth < el.scrollWidth + 1) return p; return null; };
  const where = el => { const h = [...article.querySelectorAll('h1, h2, h3')]
    .filter(x => x.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING).pop();
    return (h ? h.textContent.replace('#', '').trim() : '(top)').slice(0, 60); };
  const out = {equations: [], tables: [], images: [], code: [], tracebacks: [], column: column.width};
  for (const box of article.querySelectorAll("div.math mjx-container[display='true']")) {
    const r = box.getBoundingClientRect();
    const hidden = box.scrollWidth - box.clientWidth;
    const eqno = box.parentElement.querySelector(':scope > .eqno');
    let overlap = false;
    if (eqno) { const n = eqno.getBoundingClientRect();
      overlap = n.left < r.right - 1 && n.right > r.left + 1 && n.top < r.bottom && n.bottom > r.top; }
    out.equations.push({where: where(box), text: (box.parentElement.textContent || '').slice(0, 60),
      overflow: r.right - column.right, hidden, scrolls: scrolls(box),
      cue: box.classList.contains('minippo-more-right'), overlap});
  }
  for (const table of article.querySelectorAll('table')) {
    if (!visible(table)) continue;
    const t = table.getBoundingClientRect();
    const box = scroller(table, article);
    out.tables.push({where: where(table), width: t.width, fits: t.width <= column.width + 1,
      scrolls: !!box, box_overflow: box ? box.getBoundingClientRect().right - column.right : null});
  }
  for (const pre of article.querySelectorAll('div.highlight pre, div.output pre, .output_text pre')) {
    if (!visible(pre)) continue;
    out.code.push({where: where(pre), hidden: pre.scrollWidth - pre.clientWidth,
      text: pre.textContent.split('\n').sort((a, b) => b.length - a.length)[0].slice(0, 100)});
  }
  for (const img of article.querySelectorAll('img')) {
    if (!visible(img)) continue;
    out.images.push({where: where(img), src: img.getAttribute('src').split('/').pop(),
      alt: img.getAttribute('alt'), natural: img.naturalWidth, shown: img.getBoundingClientRect().width});
  }
  for (const o of article.querySelectorAll('.cell_output, .output')) {
    const text = o.textContent;
    if (/Traceback \(most recent call last\)|^\w+Error: /m.test(text) || o.querySelector('.traceback, .output.error'))
      out.tracebacks.push({where: where(o), text: text.slice(0, 200)});
  }
  const shown = sel => [...document.querySelectorAll(sel)].filter(visible).length;
  out.top_bars = shown('header.bd-header, div.bd-header-article, .header-article');
  out.search_boxes = shown('form.bd-search, button.search-button, .search-button-field');
  return out;
}"""


class Look:
    """A page opened at one width and measured."""

    def __init__(self, browser, base: str, doc: str, width: int):
        self.doc, self.width = doc, width
        self.visit = Visit(browser, base, doc, viewport={"width": width, "height": 900})
        self.m = self.visit.page.evaluate(MEASURE)

    @property
    def page(self):
        return self.visit.page


@pytest.fixture(scope="session")
def looked(browser, server):
    cache: dict[tuple[str, str], Look] = {}

    def open_(doc: str, width: str) -> Look:
        if (doc, width) not in cache:
            cache[doc, width] = Look(browser, server, doc, WIDTHS[width])
        return cache[doc, width]

    yield open_
    for look in cache.values():
        look.visit.close()


PAGES = [pytest.param(doc, width, id=f"{doc.split('/')[-1]}-{width}") for doc in DOCS for width in WIDTHS]


def alt_says_something(alt: str | None) -> bool:
    alt = (alt or "").strip()
    return bool(alt) and not re.fullmatch(r"[0-9a-f]{16,}(\.\w+)?|.*\.(png|svg|jpe?g|gif)|image|figure|plot", alt, re.I)


# ----------------------------------------------------------------------------- every page, both widths
@pytest.mark.parametrize("doc,width", PAGES)
def test_no_console_error_and_no_traceback(looked, doc, width):
    look = looked(doc, width)
    assert not look.visit.errors, f"{doc} at {width}: console errors: {look.visit.errors}"
    assert not look.m["tracebacks"], f"{doc} at {width}: tracebacks in outputs: {look.m['tracebacks']}"


@pytest.mark.parametrize("doc,width", PAGES)
def test_equations_fit_or_scroll_with_a_cue(looked, doc, width):
    bad = []
    for eq in looked(doc, width).m["equations"]:
        if eq["overflow"] > 1:
            bad.append(f"runs {eq['overflow']:.0f} px out of the column: {eq}")
        if eq["hidden"] > 1 and not (eq["scrolls"] and eq["cue"]):
            bad.append(f"hides {eq['hidden']} px without a scroll box and its cue: {eq}")
        if eq["overlap"]:
            bad.append(f"its number overlaps the formula: {eq}")
    assert not bad, f"{doc} at {width}:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc,width", PAGES)
def test_tables_fit_or_scroll_in_their_own_box(looked, doc, width):
    bad = [t for t in looked(doc, width).m["tables"]
           if not t["fits"] and (not t["scrolls"] or t["box_overflow"] > 1)]
    assert not bad, f"{doc} at {width}: tables wider than the column without a scroll box: {bad}"


@pytest.mark.parametrize("doc,width", PAGES)
def test_images_are_shown_near_their_drawn_size(looked, doc, width):
    small = [f"{i['where']}: {i['src']} drawn {i['natural']} px, shown {i['shown']:.0f} px "
             f"({i['shown'] / i['natural']:.0%})" for i in looked(doc, width).m["images"]
             if i["natural"] and i["shown"] < MIN_SHOWN_FRACTION * i["natural"] - 0.5]
    assert not small, f"{doc} at {width}: images shown below {MIN_SHOWN_FRACTION:.0%} of their drawn width " \
                      f"(draw them with minippo.style):\n" + "\n".join(small)


@pytest.mark.parametrize("doc,width", PAGES)
def test_images_have_alt_text(looked, doc, width):
    missing = [f"{i['where']}: {i['src']} alt={i['alt']!r}" for i in looked(doc, width).m["images"]
               if not alt_says_something(i["alt"])]
    assert not missing, f"{doc} at {width}: images without alt text (minippo.style.figure_metadata):\n" \
                        + "\n".join(missing)


@pytest.mark.parametrize("doc", CHAPTERS + ["book/metrics", "book/hyperparameters", "book/notation", "book/glossary"])
@pytest.mark.parametrize("check", ["wide_table", "wide_code"])
def test_desktop_needs_no_sideways_scrolling(looked, doc, check):
    """On a 1280-px screen, tables and code fit the column (scrolling is for phones)."""
    m = looked(doc, "desktop").m
    if check == "wide_table":
        wide = [f"{t['where']}: {t['width']:.0f} px" for t in m["tables"] if not t["fits"]]
    else:
        wide = [f"{c['where']}: {c['hidden']} px hidden: {c['text']!r}" for c in m["code"] if c["hidden"] > 1]
    assert not wide, f"{doc}: {check.replace('_', ' ')}s wider than the {m['column']:.0f}-px column:\n" \
                     + "\n".join(wide)


# ----------------------------------------------------------------------------- navigation
@pytest.mark.parametrize("doc", ["book/intro", "chapters/05_ppo_in_practice", "book/metrics"])
def test_one_top_bar_and_one_search_box(looked, doc):
    m = looked(doc, "desktop").m
    assert m["top_bars"] == 1, f"{doc}: {m['top_bars']} top bars shown"
    assert m["search_boxes"] == 1, f"{doc}: {m['search_boxes']} search boxes shown"


def test_themes_are_the_pinned_pair():
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    for name, version in THEMES.items():
        assert f"{name}=={version}" in requirements
        assert importlib.metadata.version(name) == version, (
            f"{name} {importlib.metadata.version(name)} is installed; the book is tested with "
            f"{version} (pip install -r requirements.txt)")


@pytest.mark.parametrize("doc", ["chapters/03_trust_regions_trpo", "book/glossary"])
def test_phone_sidebar_toggle_opens_the_table_of_contents(browser, server, doc):
    visit = Visit(browser, server, doc, viewport={"width": 390, "height": 844})
    try:
        page = visit.page
        chapter_link = page.locator("nav.bd-docs-nav a[href*='05_ppo_in_practice']").first
        assert not chapter_link.is_visible(), "the table of contents is open before the toggle is pressed"
        toggles = [t for t in page.locator(
            "button.primary-toggle, label.sidebar-toggle.primary-toggle, .pst-navbar-icon.sidebar-toggle").all()
            if t.is_visible()]
        assert len(toggles) == 1, f"{len(toggles)} visible sidebar toggles"
        toggles[0].click()
        page.wait_for_timeout(600)
        assert chapter_link.is_visible(), "the sidebar toggle did not show the table of contents"
        box = chapter_link.bounding_box()
        assert box and 0 <= box["x"] < 390, f"the chapter list is off screen: {box}"
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
        if chapter_link.is_visible():  # the overlay closes it where Escape does not
            page.mouse.click(380, 450)
            page.wait_for_timeout(600)
        assert not chapter_link.is_visible(), "the table of contents does not close again"
        assert not visit.errors, visit.errors
    finally:
        visit.close()


def test_search_ranks_the_metric_dictionary_first(browser, server):
    visit = Visit(browser, server, "search", query="?q=clip+fraction")
    try:
        page = visit.page
        page.wait_for_selector("#search-results ul.search li", timeout=30_000)
        page.wait_for_timeout(500)
        first = page.locator("#search-results ul.search li a").first.get_attribute("href")
        assert "book/metrics" in first, f"the first result for 'clip fraction' is {first}"
    finally:
        visit.close()


# ----------------------------------------------------------------------------- numbers and labels
@pytest.mark.parametrize("doc", CHAPTERS)
def test_chapter_numbers_its_blocks_per_chapter(built_book, doc):
    html = (built_book / f"{doc}.html").read_text(encoding="utf-8")
    n = CHAPTERS.index(doc) + 1
    captions = [re.sub(r"<[^>]+>|\s+", " ", c).strip()
                for c in re.findall(r'<span class="caption-number">(.*?)</span>', html, flags=re.S)]
    numbered = [c for c in captions if re.match(r"(Exercise|Theorem|Lemma|Definition|Algorithm|Figure|"
                                                  r"Table|Listing|Proposition|Corollary|Example|Remark)\b", c)]
    wrong = [c for c in numbered if not re.match(rf"\w+ {n}\.\d+\b", c)]
    assert not wrong, f"{doc}: numbered through the book, not per chapter: {wrong}"
    eqnos = re.findall(r'<span class="eqno">\((.*?)\)', html)
    assert all(re.fullmatch(rf"{n}\.\d+", e) for e in eqnos), f"{doc}: equation numbers {eqnos}"


def test_bibliography_labels_read_as_the_text_cites(looked):
    labels = looked("book/bibliography", "desktop").page.locator(
        "div.citation > span.label, dl.citation > dt").all_inner_texts()
    assert labels
    wrong = [label for label in labels if not re.fullmatch(r"[^\[\]]+, \d{4}[a-z]?", label.strip())]
    assert not wrong, f"labels not in the author-year form of the citations: {wrong}"


def last_section(doc: str) -> str:
    nb = nbformat.read(ROOT / f"{doc}.ipynb", as_version=4)
    headings = [line for c in nb.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if re.match(r"## \S", line)]
    return headings[-1][3:].strip() if headings else ""


@pytest.mark.parametrize("doc", CHAPTERS)
def test_every_chapter_ends_with_the_same_section(doc):
    assert last_section(doc) == CHAPTER_ENDING, f"{doc} ends with {last_section(doc)!r}"


def test_glossary_chinese_is_drawn_in_the_shipped_font(looked):
    page = looked("book/glossary", "desktop").page
    status = page.evaluate("""async () => { await document.fonts.ready;
        const faces = [...document.fonts].filter(f => f.family.replace(/"/g, '') === 'minippo CJK');
        return faces.map(f => f.status); }""")
    assert status == ["loaded"], f"the shipped CJK font: {status}"
    text = page.inner_text("main")
    chinese = set(re.findall(r"[\u3400-\u9fff]", text))
    assert chinese, "the glossary has no Chinese column"
    covered = page.evaluate("""(chars) => chars.filter(c => !document.fonts.check('16px "minippo CJK"', c))""",
                            sorted(chinese))
    assert not covered, f"characters the shipped font lacks: {covered}"


# ----------------------------------------------------------------------------- screenshots
@pytest.mark.parametrize("doc", SCREENSHOT_CHAPTERS)
@pytest.mark.parametrize("width", list(WIDTHS))
def test_screenshots_for_a_person(looked, doc, width):
    page = looked(doc, width).page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stem = SCREENSHOTS / f"look-{doc.split('/')[-1][:2]}-{WIDTHS[width]}"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=f"{stem}.png")
    figure = page.locator("article img").first
    if figure.count():
        figure.scroll_into_view_if_needed()
        page.wait_for_timeout(200)
        page.screenshot(path=f"{stem}-figure.png")
    assert Path(f"{stem}.png").stat().st_size > 10_000
