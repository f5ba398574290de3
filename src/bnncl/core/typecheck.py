"""Type checks of option values against their annotations (a dataclass field's, a function parameter's), so a config
file's ``epochs = "four"`` or ``replay_size = 2.5`` is refused with one line before anything runs, instead of failing
mid-run or being used as given. NumPy-free and torch-free.

Accepted: ``int`` a whole number (not a bool, within int64), ``float`` any number (an int too), ``str`` (or a path),
``bool`` only ``true``/``false``, ``dict``, ``list[int]`` / ``list[str]``, and unions of those with ``None``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

from bnncl.core.errors import ConfigError

INT64 = 2 ** 63
SIZE_LIMIT = 2 ** 31 - 1  # counts (epochs, batch sizes, memory slots) above this are a typo, not a setting

_NAMES = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false", "dict": "a table",
          "list[int]": "a list of whole numbers", "list[str]": "a list of strings", "None": "nothing"}


def _fits(value, kind: str) -> bool:
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)  # the range is the option's to check
    if kind == "str":  # a path may come as a Path
        return isinstance(value, (str, os.PathLike))
    if kind == "dict":
        return isinstance(value, dict)
    if kind.startswith("list[") and kind.endswith("]"):
        return isinstance(value, list) and all(_fits(v, kind[5:-1]) for v in value)
    return True  # an annotation this module does not know: not checked here


def check_value(where: str, name: str, value, annotation: str) -> None:
    """Raise :class:`ConfigError` ``"<where>: <name> must be <kind> (not <value>)"`` unless ``value`` fits
    ``annotation`` (a string such as ``"int | None"``)."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    kinds = [k.strip() for k in text.split("|")]
    if any(_fits(value, k) for k in kinds):
        return
    wanted = " or ".join(_NAMES.get(k, k) for k in kinds if k != "None")
    raise ConfigError(f"{where}{name} must be {wanted} (not {value!r})")


def check_fields(obj, where: str = "") -> None:
    """Every field of the dataclass instance ``obj`` against its annotation."""
    for f in dataclasses.fields(obj):
        check_value(where, f.name, getattr(obj, f.name), f.type)


def check_arguments(function, values: dict, where: str = "") -> None:
    """``values`` (keyword arguments for ``function``) against the annotations of its parameters."""
    params = inspect.signature(function).parameters
    for name, value in values.items():
        if name in params and params[name].annotation is not inspect.Parameter.empty:
            check_value(where, name, value, params[name].annotation)


def check_size(where: str, name: str, value: int, minimum: int = 1) -> None:
    """A count: at least ``minimum``, at most :data:`SIZE_LIMIT`."""
    if not minimum <= value <= SIZE_LIMIT:
        raise ConfigError(f"{where}{name} must be between {minimum} and {SIZE_LIMIT:,}, got {value}")
