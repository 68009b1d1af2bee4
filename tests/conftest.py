"""Fixtures that several test files share, so that a test session has one of each: the built
book (test_book.py builds it, or reuses a fresh build) and the headless browser."""
from __future__ import annotations

import pytest

import test_book


@pytest.fixture(scope="session")
def built_book():
    return test_book.build_book()


@pytest.fixture(scope="session")
def browser():
    with test_book.chromium() as browser:
        yield browser
