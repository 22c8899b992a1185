"""The examples in the public modules' docstrings run."""

from __future__ import annotations

import doctest

import engine


def test_engine_docstring_examples_run() -> None:
    failures, tried = doctest.testmod(engine, verbose=False)
    assert tried > 0 and failures == 0
