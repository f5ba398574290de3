"""Option values against their annotations (:mod:`bnncl.core.typecheck`): what each kind accepts and refuses, and the
message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bnncl.core.errors import ConfigError
from bnncl.core.typecheck import SIZE_LIMIT, check_arguments, check_fields, check_size, check_value

ACCEPTED = [("int", 3), ("int", -2 ** 63), ("int", 0), ("float", 0.5), ("float", 2), ("float", float("nan")),
            ("str", "x"), ("str", Path("a/b")), ("bool", False), ("dict", {}), ("list[int]", [1, 2]),
            ("list[int]", []), ("list[str]", ["a"]), ("int | None", None), ("str | list[str]", ["a", "b"]),
            ("str | list[str]", "a")]
REFUSED = [("int", True, "a whole number"), ("int", 1.0, "a whole number"), ("int", "3", "a whole number"),
           ("int", 2 ** 63, "a whole number"), ("float", "0.1", "a number"), ("float", True, "a number"),
           ("str", 5, "a string"), ("bool", 1, "true or false"), ("bool", "yes", "true or false"),
           ("dict", [], "a table"), ("list[int]", [1, 2.5], "a list of whole numbers"),
           ("list[int]", (1, 2), "a list of whole numbers"), ("int | None", "x", "a whole number"),
           ("str | list[str]", ["a", 1], "a string or a list of strings")]


@pytest.mark.parametrize("annotation, value", ACCEPTED)
def test_accepted(annotation, value):
    check_value("", "v", value, annotation)


@pytest.mark.parametrize("annotation, value, words", REFUSED)
def test_refused_with_one_line_naming_the_option_and_the_value(annotation, value, words):
    with pytest.raises(ConfigError) as info:
        check_value("c.toml: [learn] ", "epochs", value, annotation)
    assert str(info.value) == f"c.toml: [learn] epochs must be {words} (not {value!r})"


def test_annotations_as_types_strings_and_unions():
    check_value("", "v", 3, int)
    check_value("", "v", None, int | None)
    with pytest.raises(ConfigError, match="v must be a whole number"):
        check_value("", "v", "3", int | None)
    check_value("", "v", object(), "SomethingElse")  # an annotation it does not know is not checked


def test_fields_and_arguments():
    @dataclass
    class Options:
        epochs: int = 1
        name: str | None = None

    check_fields(Options())
    with pytest.raises(ConfigError, match="epochs must be a whole number"):
        check_fields(Options(epochs=1.5))

    def factory(train, n: int = 1, order: list[int] | None = None):
        return n, order

    check_arguments(factory, {"n": 2, "order": [1], "unknown": "left to the caller"})
    with pytest.raises(ConfigError, match=r"\[stream\] order must be a list of whole numbers"):
        check_arguments(factory, {"order": ["a"]}, "[stream] ")


def test_sizes():
    check_size("", "batch_size", SIZE_LIMIT)
    check_size("", "replay_size", 0, minimum=0)
    for bad in (0, SIZE_LIMIT + 1):
        with pytest.raises(ConfigError, match=f"batch_size must be between 1 and {SIZE_LIMIT:,}, got {bad}"):
            check_size("", "batch_size", bad)
