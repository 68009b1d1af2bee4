"""Write a synthetic class of submissions, to try ``python -m minippo.grade`` before a real one.

    python scripts/synthetic_class.py demo_class/                       # 40 students, chapter 2
    python scripts/synthetic_class.py demo_class/ --students 10 --chapter 04_ppo_clipped_objective
    python -m minippo.grade demo_class/ --out grades.csv

Each student gets a folder with one notebook: the student edition of the chapter
(``scripts/student_edition.py``) with the exercises' stubs filled in. Most students submit the
solutions from the instructor's notebook; the others, in a fixed rotation, solve only the first
exercise, return a constant, raise, rename the function, leave the notebook untouched, or loop
forever (which costs the grader its per-exercise timeout). The tests of the grader
(``tests/test_grade.py``) build their class with the same functions.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from student_edition import ROOT, strip_notebook  # noqa: E402

#: one rotation of 40 students, shuffled once (a fixed seed, so every run writes the same class)
MIX = {"perfect": 24, "first only": 5, "constant": 4, "untouched": 3, "renamed": 2, "raises": 1,
       "looping": 1}
ROTATION = [kind for kind, n in MIX.items() for _ in range(n)]
random.Random(0).shuffle(ROTATION)


def solution_code(nb, label: str) -> str:
    """The code cells of an exercise's gated solution (``{solution-start} label`` ... end)."""
    inside, code = False, []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.search(r"\{solution-start\}\s*" + re.escape(label) + r"\b",
                                                      cell.source):
            inside = True
        elif cell.cell_type == "markdown" and "{solution-end}" in cell.source:
            inside = False
        elif inside and cell.cell_type == "code":
            code.append(cell.source)
    if not code:
        raise ValueError(f"label {label!r} has no gated solution with code in this notebook")
    return "\n\n".join(code)


def stub_index(nb, label: str) -> int:
    """Index of the code cell right after the statement of exercise ``label``."""
    for i, cell in enumerate(nb.cells[:-1]):
        states = re.search(r":label:\s*" + re.escape(label) + r"\s", cell.source + "\n")
        if cell.cell_type == "markdown" and states:
            if nb.cells[i + 1].cell_type == "code":
                return i + 1
    raise ValueError(f"label {label!r}: no statement followed by a code cell")


def fill(student_nb, answers: dict[str, str]):
    """A copy of a student edition with the stub of each exercise in ``answers`` replaced."""
    nb = nbformat.from_dict(student_nb)
    for label, code in answers.items():
        nb.cells[stub_index(nb, label)].source = code
    return nb


def answers_of(kind: str, solutions: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    """What a student of ``kind`` writes for each exercise (label -> code)."""
    labels = list(solutions)
    if kind == "perfect":
        return dict(solutions)
    if kind == "first only":
        return {labels[0]: solutions[labels[0]]}
    if kind == "untouched":
        return {}
    if kind == "renamed":
        return {k: code.replace(f"def {names[k]}(", f"def {names[k]}_v2(") for k, code in solutions.items()}
    body = {"constant": "    return torch.zeros(3)", "raises": "    raise ValueError('not sure yet')",
            "looping": "    while True:\n        pass"}[kind]
    return {k: f"def {names[k]}(*args):\n{body}\n" for k in labels}


def write_class(out: Path, chapter: str = "02_value_functions_gae", students: int = 40) -> list[Path]:
    """Write ``students`` submissions of ``chapter`` under ``out``; return their paths."""
    from minippo.grade import read_chapter

    source = ROOT / "chapters" / f"{chapter}.ipynb"
    pristine = nbformat.read(source, as_version=4)
    checked = read_chapter(source).checked
    if not checked:
        raise ValueError(f"chapter {chapter} has no exercise with a checker")
    solutions = {ex.label: solution_code(pristine, ex.label) for ex in checked}
    names = {ex.label: ex.args[0] for ex in checked}
    handout = strip_notebook(pristine)
    written = []
    for i in range(students):
        kind = ROTATION[i % len(ROTATION)]
        path = out / f"student{i + 1:02d}" / f"{chapter}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(fill(handout, answers_of(kind, solutions, names)), path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the submissions into")
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--chapter", default="02_value_functions_gae")
    args = parser.parse_args(argv)
    written = write_class(args.out, args.chapter, args.students)
    kinds = [ROTATION[i % len(ROTATION)] for i in range(args.students)]
    mix = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
    print(f"Wrote {len(written)} submissions of {args.chapter} to {args.out} ({mix})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
