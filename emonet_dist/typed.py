"""Strict conversion between frozen dataclasses and plain dicts, YAML loading and ``a.b=c`` overrides.

This is the machinery behind :mod:`emonet_dist.config`; it knows nothing about EmoNet. The rules:

* ``from_dict`` rejects unknown keys and values of the wrong type, naming the full dotted key and the
  closest valid key. ``int`` is accepted where a ``float`` is expected; ``bool`` is never taken for a number.
* ``to_dict`` gives plain Python values (tuples become lists) so that ``from_dict(to_dict(c)) == c`` and the
  dict can cross process boundaries (Ray's ``train_loop_config``) and be written as YAML.
* Overrides are parsed as YAML scalars (``lr=1e-3`` is a float, ``name=null`` is ``None``) and may index into
  lists: ``data.corpora.0.name=emodb``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from .errors import ConfigError, short, short_name

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------------------
# YAML loading: safe tags only, and a bound on what aliases can expand to
# --------------------------------------------------------------------------------------------------------------
MAX_YAML_VALUES = 20_000
"""Most values (scalars, lists, mappings) one YAML document may hold with every alias expanded. The largest
shipped config or spec holds a few hundred; a 331-byte alias bomb (9 levels of 9 aliases) expands to 9**9,
about 4 * 10**8."""
MAX_YAML_BYTES = 1_000_000
"""Largest config or job spec file read; the largest shipped one is under 10 KB."""
MAX_YAML_DEPTH = 100
"""Most levels of nesting (the config tree has 4); deeper input would exhaust Python's stack further on."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (PyYAML follows YAML 1.1, which needs ``1.0e-3``) and
    refuses a document whose aliases expand past :data:`MAX_YAML_VALUES` values or into themselves.

    PyYAML shares one node per anchor, so composing an alias bomb is cheap; the cost comes later, when a
    strict type check walks, copies or formats the expanded value. The check runs on the composed node graph,
    before anything is constructed, and visits each node once.
    """

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], path: set[int]) -> int:
    """Values in ``node`` with aliases expanded; ``sizes`` memoises shared nodes, ``path`` holds the ancestors."""
    if id(node) in sizes:
        return sizes[id(node)]
    line = node.start_mark.line + 1
    if id(node) in path:
        raise ConfigError(f"YAML line {line}: an alias refers to a collection that contains it; a config cannot "
                          f"be recursive")
    if len(path) >= MAX_YAML_DEPTH:
        raise ConfigError(f"YAML line {line}: nested too deeply (more than {MAX_YAML_DEPTH} levels); refused")
    path.add(id(node))
    children = [c for kv in node.value for c in kv] if isinstance(node, yaml.MappingNode) else \
        node.value if isinstance(node, yaml.SequenceNode) else []
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, path)
        if total > MAX_YAML_VALUES:
            raise ConfigError(f"YAML line {line}: this value expands to more than {MAX_YAML_VALUES} values "
                              f"through its aliases (*name); refused (an alias bomb?)")
    path.discard(id(node))
    sizes[id(node)] = total
    return total


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML with safe tags only; raises ``yaml.YAMLError`` for bad syntax and :class:`ConfigError` for a
    document that is too large or too deep, or holds a value Python cannot build (a 5,000-digit integer, the
    date 2001-13-45)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"YAML is nested too deeply (more than {MAX_YAML_DEPTH} levels); refused") from None
    except (ValueError, OverflowError) as exc:  # raised by int(), float() and datetime() on resolved scalars
        raise ConfigError(f"YAML holds a value that cannot be read: {short(exc)}") from None


def load_yaml_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML config (see jobs/ for examples)")
    if path.stat().st_size > MAX_YAML_BYTES:  # read and parsed whole before any other check could refuse it
        raise ConfigError(f"{path} holds {path.stat().st_size} bytes; a config or job spec is at most "
                          f"{MAX_YAML_BYTES} (the shipped ones hold a few KB)")
    try:
        data = yaml_load(path.read_text())
    except yaml.YAMLError as exc:  # PyYAML's message quotes at most a 75-character snippet of the line
        raise ConfigError(f"{path} is not valid YAML: {short(exc, 300)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections, got {type(data).__name__}")
    return data


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return the converted value."""
    if tp is Any:
        return value
    if _is_union(tp):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {short(value)}")
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {short(value)} is not one of {', '.join(map(repr, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {type(value).__name__} {short(value)}")
        return _from_dict(tp, value, key)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {short(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}.{i}") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{key}.{i}") for i, (v, a) in enumerate(zip(args, value)))
    if origin is dict:
        kt, vt = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {short(value)}")
        return {_convert(k, kt, f"{key}.<key>"): _convert(v, vt, f"{key}.{short_name(k)}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported annotation {tp!r} at {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {short(value)}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_dict(cls: type[T], data: dict, prefix: str) -> T:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            where = f"{prefix}.{short_name(k)}" if prefix else short_name(k)
            close = difflib.get_close_matches(k, list(fields), n=1) if isinstance(k, str) and len(k) < 100 else []
            hint = f" (did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{where}'{hint}; valid keys here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        where = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key '{where}'")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # __post_init__ checks name only the field; add where it sits in the tree ("data.batch_size ...").
        if exc.key and prefix:
            raise ConfigError(f"{prefix}.{exc}", key=f"{prefix}.{exc.key}") from None
        raise ConfigError(f"{prefix + ': ' if prefix else ''}{exc}", key=exc.key) from None


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build ``cls`` from ``data``, rejecting unknown keys and wrong types (strict). ``prefix``: the dotted key
    where ``data`` sits in a larger document (``steps.3``), so that errors name the full key."""
    if not isinstance(data, dict):
        where = f"{prefix}: " if prefix else ""
        raise ConfigError(f"{where}expected a mapping for {cls.__name__}, got {type(data).__name__}")
    return _from_dict(cls, data, prefix)


def to_dict(obj: Any) -> Any:
    """Plain-Python form of a dataclass tree (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=c"`` -> ``("a.b", <c parsed as YAML>)``."""
    if "=" not in text:
        raise ConfigError(f"override {short(text)} must look like section.key=value, e.g. optim.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {short(text)} has an empty key; write it as section.key=value")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except ConfigError as exc:  # an alias bomb or an unreadable number: say which override
        raise ConfigError(f"override {short(key)}: {exc}") from None
    return key, value


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key = "a.b.c"``; list items are addressed by index."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_index(part, len(node), where)]
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(f"cannot set {short(key)}: {short(where)} holds a {type(node).__name__}, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_index(last, len(node), key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"cannot set {short(key)}: its parent holds a {type(node).__name__}, not a section")


def _index(part: str, length: int, where: str) -> int:
    # ASCII digits only, and few of them: int() refuses '²' and numbers of more than 4300 digits with ValueError
    if not re.fullmatch(r"-?[0-9]{1,18}", part) or not -length <= int(part) < length:
        raise ConfigError(f"{short(where)} indexes a list of {length} items; use an index from 0 to {length - 1}")
    return int(part)


def apply_overrides(cls: type[T], data: dict, overrides: list[str] | tuple[str, ...]) -> T:
    """Apply ``a.b=c`` overrides to a config dict and build ``cls`` strictly."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    return from_dict(cls, data)


def replace_values(cls: type[T], data: dict, values: dict[str, Any]) -> T:
    """Set dotted keys to typed Python values (``{"train.steps_per_stage": 12}``) and build ``cls`` strictly.

    The typed counterpart of :func:`apply_overrides` for code that derives a config: values are not parsed from
    text, but they pass the same checks (unknown keys, types, limits) as a user's config."""
    import copy

    data = copy.deepcopy(data)
    for key, value in values.items():
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"replace: key {short(key)} must look like section.key")
        set_dotted(data, key, to_dict(value))
    return from_dict(cls, data)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "l": [x, y]}`` -> ``{"a.b": 1, "l.0": x, "l.1": y}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, list) and data and any(isinstance(v, (dict, list)) for v in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = data
    return out
