"""Typed mapping ⇄ frozen dataclass: what reads a YAML config into the stage dataclasses and writes it back.

:func:`from_dict` builds a dataclass from a nested mapping, checking every value against its field's annotation
(``int``, ``float``, ``bool``, ``str``, ``Literal``, optional and union types, tuples, nested dataclasses) and
naming the full key path of the first bad key or value; :func:`with_overrides` applies ``--set`` style dotted
keys (or nested sections) to an existing config through the same checks; :func:`to_dict` is the inverse.  It
knows nothing of the project's settings (those are ``config.py``), so every config dataclass gets the same
errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["ConfigError", "from_dict", "with_overrides", "to_dict"]


class ConfigError(ValueError):
    """A configuration value or key that does not fit the dataclasses; the message names the key path."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_YAML11_FLOAT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert YAML shapes (list → tuple, int → float)."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # a dataclass annotation (a class)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, _prefix=where + ".")
    if origin in (typing.Union, types.UnionType):
        errors = []
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 (PyYAML) reads `1e-4` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")  # pragma: no cover - a config-author error


def from_dict(cls: type, data: Mapping[str, Any], base: Any = None, *, _prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) mapping; fields absent from ``data`` come from ``base`` or defaults.

    Unknown keys raise :class:`ConfigError` naming the full key path (``sft.lora_rr``) and the known keys.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key {_prefix + str(unknown[0])!r} (known keys of {cls.__name__}: {', '.join(names)})"
        )
    kwargs: dict[str, Any] = {}
    for name in names:
        sub_base = getattr(base, name) if base is not None else None
        if name in data:
            tp = hints[name]
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                if not isinstance(data[name], Mapping):
                    raise ConfigError(f"{_prefix}{name}: expected a mapping, got {type(data[name]).__name__}")
                kwargs[name] = from_dict(tp, data[name], sub_base, _prefix=f"{_prefix}{name}.")
            else:
                kwargs[name] = _coerce(data[name], tp, _prefix + name)
        elif base is not None:
            kwargs[name] = sub_base
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{_prefix.rstrip('.') or cls.__name__}: {e}") from None


def _merged(old: Any, new: Any) -> Any:
    # a mapping given for a section sets only its keys; any other value replaces what was there
    if isinstance(old, dict) and isinstance(new, Mapping):
        out = dict(old)
        for k, v in new.items():
            out[k] = _merged(out.get(k), v)
        return out
    return {k: _merged(None, v) for k, v in new.items()} if isinstance(new, Mapping) else new


def _check_key(cls: type, key: str) -> None:
    """Raise ConfigError unless ``key`` (dotted) walks through sections of ``cls`` to one of its fields."""
    tp: Any = cls
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            raise ConfigError(f"unknown config key {key!r}: {'.'.join(parts[:i])} is a value, not a section")
        names = [f.name for f in dataclasses.fields(tp)]
        if part not in names:
            near = difflib.get_close_matches(part, names, n=1)
            hint = f"did you mean {'.'.join(parts[:i] + near)!r}? " if near else ""
            raise ConfigError(f"unknown config key {where!r} ({hint}known keys of {tp.__name__}: {', '.join(names)})")
        tp = _hints(tp)[part]


def with_overrides(cfg: Any, *overrides: Mapping[str, Any]) -> Any:
    """``cfg`` (a config dataclass, usually :class:`RunConfig`) with ``overrides`` applied and re-validated.

    Keys are dotted paths in the YAML shape (``{"mcts.simulations": 4, "sft.mode": "mixed"}``); a value that is
    a mapping for a section sets only the keys it names (``{"mcts": {"k": 2}}``), so a whole YAML document is
    an override too.  Keys apply in order, mapping after mapping, a later one winning.  The result is checked
    once, through :func:`from_dict`: a wrong type, a value out of range or a key that is not a field raises
    :class:`ConfigError` naming the key.  This is the one place where command-line flags, ``--set`` items and
    flow parameters are merged into a config.
    """
    nested: dict[str, Any] = {}
    for mapping in overrides:
        for key, value in mapping.items():
            key = str(key).strip()
            if not key or "" in key.split("."):
                raise ConfigError(f"{key!r}: not a config key (expected a dotted path such as mcts.simulations)")
            _check_key(type(cfg), key)
            *parents, leaf = key.split(".")
            node = nested
            for p in parents:
                if not isinstance(node.get(p), dict):
                    node[p] = {}
                node = node[p]
            node[leaf] = _merged(node.get(leaf), value)
    return from_dict(type(cfg), nested, cfg) if nested else cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) of a config dataclass — the YAML shape."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)
