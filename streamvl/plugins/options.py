"""Adapter options: declared once (`contract.Option`: name, type, default, doc), validated from that declaration.

`AdapterSpec.build` validates the options a user gave before the factory sees them;
`resolve_options` is what a factory calls to fill in the defaults (TorchAdapter layers a
checkpoint's saved options between the defaults and the given ones). Types are checked by
pydantic in strict mode (no string or bool coercion; an int is a valid float).
"""

from __future__ import annotations

import copy
import types
import typing
from functools import lru_cache
from typing import Any, Mapping, Sequence

from streamvl.errors import OptionError
from streamvl.plugins.contract import Option

_NAMES = {float: "a number", int: "a whole number", bool: "true or false", str: "a string", type(None): "none"}


def type_name(tp: Any) -> str:
    """A reader's name for an option type: 'a number', 'a whole number or none', 'list[float]'."""
    if tp in _NAMES:
        return _NAMES[tp]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp)


@lru_cache(maxsize=None)
def _validator(tp: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(tp)


def check_value(adapter: str, option: Option, value: Any) -> Any:
    """The value as its declared type, or an OptionError naming the adapter and the option."""
    from pydantic import ValidationError

    try:
        return _validator(option.type).validate_python(value, strict=True)
    except ValidationError:
        raise OptionError(f"{adapter} option {option.name!r} must be {type_name(option.type)}, got {value!r}",
                          plugin=adapter) from None


def validate_options(adapter: str, declared: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """The given options, each checked against its declaration; unknown names are an OptionError."""
    known = {o.name: o for o in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise OptionError(f"unknown {adapter} option(s) {unknown}; known: {sorted(known) or 'none'}", plugin=adapter)
    return {k: check_value(adapter, known[k], v) for k, v in given.items()}


def resolve_options(adapter: str, declared: Sequence[Option], given: Mapping[str, Any],
                    saved: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every declared option's value: its default, overridden by `saved` (a checkpoint's), then by `given`."""
    values = {o.name: copy.deepcopy(o.default) for o in declared}
    values.update(validate_options(adapter, declared, saved or {}))
    values.update(validate_options(adapter, declared, given))
    return values


def describe_options(declared: Sequence[Option]) -> list[dict[str, Any]]:
    """The declaration as plain data (for `streamvl plugins --json` and docs)."""
    return [{"name": o.name, "type": type_name(o.type), "default": o.default, "doc": o.doc} for o in declared]
