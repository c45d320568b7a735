"""Frozen dataclass configs: conversion to and from plain dicts and YAML.

Every config in localign is a small ``@dataclass(frozen=True)``. Nested configs are dataclass fields.
The resolved config is saved next to every checkpoint and result with :func:`save_config`, and read
back with :func:`load_config` into the same classes, so a run folder always says how it was made.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config (possibly nested) as a plain dict of builtins (tuples become lists)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return _to_builtin(config)


def _to_builtin(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_builtin(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a dict written by :func:`config_to_dict`.

    Unknown keys raise ``ValueError`` naming the key and the config class: a typo in a parameter
    file must not be silently ignored.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}: {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; valid fields are {sorted(names)}")
    kwargs = {name: _from_builtin(hints[name], value) for name, value in data.items()}
    return cls(**kwargs)


def _from_builtin(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return config_from_dict(tp, value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return config_from_dict(arg, value)
        return _from_builtin(next(a for a in typing.get_args(tp) if a is not type(None)), value)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_builtin(args[0], v) for v in value)
        return tuple(_from_builtin(a, v) for a, v in zip(args, value))
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def save_config(config: Any, path: str | Path) -> Path:
    """Write a dataclass config as YAML (keys in field order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a YAML file written by :func:`save_config` back into ``cls``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    return config_from_dict(cls, data or {})


def replace(config: T, **overrides: Any) -> T:
    """``dataclasses.replace`` that also accepts dotted keys for nested configs.

    ``replace(cfg, **{"image.arch": "resnet18", "epochs": 2})``

    The one override mechanism of localign: ``--set`` on every command, the CLI flags of
    :data:`~localign.train.config.TRAIN_OPTIONS`, notebook parameters and ``EvalConfig.with_overrides``
    all end here. Values are converted as :func:`config_from_dict` converts a YAML file (a list
    for a tuple field becomes a tuple, an int for a float field a float, a mapping for a nested
    config that config), so an override and a saved ``config.yaml`` give equal configs.
    """
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    names = {f.name for f in dataclasses.fields(config)}
    for key in list(direct) + list(nested):
        if key not in names:
            raise ValueError(f"{type(config).__name__}: unknown field {key!r}; valid fields are {sorted(names)}")
    hints = typing.get_type_hints(type(config))
    direct = {name: _from_builtin(hints[name], value) for name, value in direct.items()}
    for head, sub in nested.items():
        inner = direct.get(head, getattr(config, head))
        if not dataclasses.is_dataclass(inner):
            raise ValueError(f"{type(config).__name__}: {head + '.' + next(iter(sub))!r} is not a nested config field "
                             f"({head!r} holds {type(inner).__name__})")
        direct[head] = replace(inner, **sub)
    return dataclasses.replace(config, **direct)


@dataclass(frozen=True)
class Option:
    """One setting as a command-line flag, a notebook parameter and a keyword argument all name it.

    A table of options (:data:`localign.train.config.TRAIN_OPTIONS`, :data:`localign.eval.cli.EVAL_OPTIONS`)
    is the only place where such a name meets the dotted key it sets: argparse flags are built from
    it (:func:`localign.cli.add_options`), and the values given are turned into dotted overrides
    with :meth:`dotted`, which :func:`replace` applies.

    :ivar name: the keyword and notebook parameter (``batch_size``); the flag is ``--batch-size``
    :ivar key: the dotted key it sets (``optim.batch_size``); ``None`` for a choice that the
        config builder resolves into several keys (``encoders``)
    :ivar help: the flag's help text
    :ivar type: ``int``, ``float``, ``str`` or ``bool``
    :ivar negate: a switch that sets ``key`` to the opposite (``--quiet`` sets ``progress`` False)
    :ivar choices: allowed values, or ``None``
    :ivar required: the flag must be given
    :ivar both_ways: a switch with a ``--no-`` twin (``--deterministic`` / ``--no-deterministic``),
        for settings whose default is the recipe's; other switches only turn something on
    :ivar default: the flag's default (``None``: "not given", the config's or the recipe's value)
    """

    name: str
    key: str | None
    help: str = ""
    type: type = str
    negate: bool = False
    choices: tuple[Any, ...] | None = None
    required: bool = False
    default: Any = None
    both_ways: bool = False

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def dotted(self, value: Any) -> dict[str, Any]:
        """``{key: value}`` for a given value (``{}`` for ``None``, "not given")."""
        if value is None or self.key is None:
            return {}
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name}: {value!r} is not one of {list(self.choices)}")
        return {self.key: (not value) if self.negate else value}


def options_to_dotted(options: dict[str, Option], values: dict[str, Any]) -> dict[str, Any]:
    """The dotted overrides of option values given by name (``None`` values are "not given")."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in options:
            raise ValueError(f"unknown option {name!r}; options are {sorted(options)}")
        out.update(options[name].dotted(value))
    return out


def positive_int_pair(value: Any, name: str, labels: str = "(H, W)") -> tuple[int, int]:
    """``value`` as two positive integers (an image size, a region grid), or a ``ValueError`` naming
    ``name`` and the offending value."""
    try:
        a, b = (int(v) for v in value)
        ok = all(float(v) == int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected {labels} positive integers, got {value!r}") from err
    if not ok or a < 1 or b < 1:
        raise ValueError(f"{name}: expected {labels} positive integers, got {value!r}")
    return a, b
