"""Write the small Chinese webfont the book ships: Noto Sans SC, cut down to the characters the
book's pages use (the glossary's Chinese column, its title in every page's sidebar).

    apt-get install fonts-noto-cjk          # or: apt-get download fonts-noto-cjk; dpkg-deb -x ...
    python scripts/cjk_font.py              # writes book/_static/fonts/noto-sans-sc-book.woff
    python scripts/cjk_font.py --check      # exit 1 if a page uses a character the font lacks

A reader whose system has no CJK font would otherwise see empty boxes. Noto Sans CJK is under
the SIL Open Font License 1.1 (``book/_static/fonts/OFL.txt``), which allows a subset to be
redistributed with the book under a name of its own ("minippo CJK"). ``book/_static/minippo.css``
loads it for the CJK code points only (``unicode-range``), so Latin text never touches it.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "book" / "_static" / "fonts" / "noto-sans-sc-book.woff"
SOURCE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SC_INDEX = 2  # the collection's fonts: JP, KR, SC, TC, HK, then the Mono ones
#: CJK symbols and punctuation, fullwidth forms, CJK unified ideographs (and extension A)
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
UNICODE_RANGE = "U+3000-303F, U+3400-4DBF, U+4E00-9FFF, U+FF00-FFEF"  # the same, for the CSS


def characters_used(root: Path = ROOT) -> set[str]:
    """Every CJK character in the book's Markdown pages and chapter notebooks."""
    text = "".join(p.read_text(encoding="utf-8") for folder in ("book", "chapters")
                   for p in sorted((root / folder).rglob("*")) if p.suffix in (".md", ".ipynb"))
    return set(CJK.findall(text))


def characters_in_font(path: Path = OUT) -> set[str]:
    from fontTools.ttLib import TTFont

    return {chr(c) for c in TTFont(path).getBestCmap()}


def write_subset(source: Path, out: Path, characters: set[str]) -> None:
    from fontTools import subset
    from fontTools.ttLib import TTCollection

    font = TTCollection(source).fonts[SC_INDEX]
    options = subset.Options()
    options.flavor = "woff"  # zlib: no Brotli module needed (woff2 would want one)
    options.layout_features = ["*"]
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]  # keep copyright, licence and its URL
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(sorted(characters)))
    subsetter.subset(font)
    for record in font["name"].names:  # the OFL reserves "Noto": rename the modified font
        if record.nameID in (1, 3, 4, 6, 16):
            text = record.toUnicode().replace("Noto Sans CJK SC", "minippo CJK").replace("NotoSansCJKsc", "minippoCJK")
            record.string = text
    font.flavor = "woff"
    out.parent.mkdir(parents=True, exist_ok=True)
    font.save(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; check the shipped font")
    parser.add_argument("--source", type=Path, default=SOURCE, help="NotoSansCJK-Regular.ttc")
    args = parser.parse_args(argv)
    used = characters_used()
    if args.check:
        missing = sorted(used - characters_in_font())
        print(f"missing from {OUT.name}: {''.join(missing)}" if missing else f"{OUT.name} covers all {len(used)}")
        return 1 if missing else 0
    write_subset(args.source, OUT, used)
    print(f"Wrote {OUT.relative_to(ROOT)}: {len(used)} characters, {OUT.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
