"""The reader's pace (issue 13): what every chapter tells a reader before and after it, checked in
the notebook sources.

- **Objectives and time.** The title cell lists what the reader will be able to do
  (``What you will be able to do after this chapter:`` followed by a bulleted list) and says how
  long the chapter takes (a line ``**Time:** about N minutes to read ...``).
- **Ending.** The last ``##`` section is ``What this chapter showed``: a short summary.
- **Exercises.** Every ``{exercise}`` starts its statement with its difficulty and an estimated
  time, ``**★★** · about 20 min`` (★ a direct computation or a small code change, ★★ a derivation
  or a new function, ★★★ an open-ended experiment or proof).
"""
from __future__ import annotations

import re

import nbformat
import pytest

from book_toc import ROOT

NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
OBJECTIVES = "What you will be able to do after this chapter:"
TIME = re.compile(r"^\*\*Time:\*\* about \d+(–\d+)? minutes to read", re.M)
ENDING = "What this chapter showed"
DIFFICULTY = re.compile(r"^\*\*★{1,3}\*\* · about \d+ min$")
EXERCISE = re.compile(r"^(`{3,}|:{3,})\{exercise\}[^\n]*\n(?P<body>.*?)^\1\s*$", re.M | re.S)

def markdown(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_objectives_and_time(path):
    title = markdown(path)[0]
    assert OBJECTIVES in title, f"{path.name}: the title cell has no '{OBJECTIVES}'"
    after = title.split(OBJECTIVES, 1)[1].lstrip("\n")
    bullets = re.findall(r"^- ", after, re.M)
    assert len(bullets) >= 2, f"{path.name}: fewer than two objectives"
    assert TIME.search(title), f"{path.name}: no '**Time:** about N minutes to read' line"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_ending(path):
    sections = [line[3:].strip() for source in markdown(path) for line in source.splitlines()
                if line.startswith("## ")]
    assert sections[-1] == ENDING, f"{path.name} ends with {sections[-1]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_say_difficulty_and_time(path):
    bodies = [m.group("body") for source in markdown(path) for m in EXERCISE.finditer(source)]
    assert bodies, f"{path.name} has no exercise"
    for body in bodies:
        lines = [line for line in body.splitlines() if line.strip() and not line.startswith(":")]
        assert lines and DIFFICULTY.match(lines[0].strip()), \
            f"{path.name}: an exercise starts with {lines[:1]!r}, not '**★★** · about 20 min'"


def test_checks_recognise_the_form():
    """The regular expressions accept the documented form and reject near misses."""
    body = "```{exercise} A title\n:label: ch01-ex-a\n\n**★★** · about 20 min\n\nShow that...\n```\n"
    (match,) = EXERCISE.finditer(body)
    first = [l for l in match.group("body").splitlines() if l.strip() and not l.startswith(":")][0]
    assert DIFFICULTY.match(first)
    assert not DIFFICULTY.match("**★★★★** · about 20 min")
    assert not DIFFICULTY.match("★★ · 20 min")
    assert TIME.search("**Time:** about 40 minutes to read, 80 s to run.")
    assert TIME.search("**Time:** about 30–45 minutes to read")
    assert not TIME.search("Time: 40 minutes")
