"""What a job spec file is checked for before its types: the ``extends`` chain, unset ``$VARS``, the runtime_env
variables emonet sets itself, and paths a cluster's nodes can all see.

A spec comes from the user or a shared repository, so it is hostile input: a file that ``extends`` itself, a
variable that is not set (a step would fail hours into a job) and a relative path that resolves inside a job's
temporary directory are refused when the spec loads, with a short quote of the offending value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import typed
from ..config import Config
from ..errors import ConfigError, short, short_name

URL = re.compile(r"^([a-z][a-z0-9+.-]*://|pipe:)")
"""A location that is not a local path: ``http(s)://``, ``s3://``, ``pipe:`` templates."""
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def raw_spec(path: Path, seen: set) -> dict:
    """A spec's YAML with its ``extends`` parent merged in: the child's keys win, ``config`` merges key by key and
    ``profiles`` name by name (a child adds profiles and keeps its parent's)."""
    if path.resolve() in seen:
        raise ConfigError(f"{short(str(path), 200)}: 'extends' loops back to itself")
    seen.add(path.resolve())
    try:
        found = path.is_file()
    except OSError:  # e.g. a name too long for the file system
        found = False
    if not found:  # the path may come from 'extends' in a file: quote a bounded prefix
        raise ConfigError(f"job spec {short(str(path), 200)} not found")
    data = typed.load_yaml_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a job spec is a mapping")
    if not data.get("extends"):
        return data
    if not isinstance(data["extends"], str):
        raise ConfigError(f"{path}: extends must be the path of another spec, got {short(data['extends'])}")
    parent = raw_spec(path.parent / data["extends"], seen)
    merged = {k: v for k, v in parent.items() if k not in ("name", "description", "groups")}
    merged.update({k: v for k, v in data.items() if k != "extends"})
    merged["config"] = _deep_merge(parent.get("config") or {}, data.get("config") or {})
    profiles = (parent.get("profiles") or {}, data.get("profiles") or {})
    if all(isinstance(x, dict) for x in profiles):  # anything else is refused by the spec's types
        merged["profiles"] = {**profiles[0], **profiles[1]}
    return merged


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_vars(data: dict, steps, profile: str | None, where: Path, runs_here: bool = False) -> None:
    """Refuse a ``$VAR`` or ``${VAR}`` that is not set, naming it and its key, when the spec loads: a step would
    otherwise fail hours into a job. Set means: in this environment, or (unless ``runs_here``) in
    ``runtime_env.env_vars``, which a submitted job's driver gets. Only the selected steps and profile count;
    ``runtime_env.env_vars`` values are left to Ray, which expands them on the cluster."""
    env = data.get("runtime_env") if isinstance(data.get("runtime_env"), dict) else {}
    env_vars = env.get("env_vars") if isinstance(env.get("env_vars"), dict) else {}
    defined = set(os.environ) | (set() if runs_here else set(env_vars))
    parts = {k: v for k, v in data.items() if k not in ("steps", "profiles", "runtime_env")}
    parts["runtime_env"] = {k: v for k, v in env.items() if k != "env_vars"}
    parts["profiles"] = {profile: (data.get("profiles") or {}).get(profile)} if profile else {}
    parts["steps"] = {f"{i}({short_name(st.get('id'))})" if isinstance(st, dict) and st.get("id") else str(i): st
                      for i, st in enumerate(steps if isinstance(steps, list) else [])}
    for key, text in _strings(parts, ""):
        for m in _VAR.finditer(text):
            if (name := m.group(1) or m.group(2)) not in defined:
                how = "" if runs_here else " (or set it in runtime_env.env_vars)"
                raise ConfigError(f"{where}: {key} uses ${name}, which is not set; export {name}{how} before "
                                  f"loading the spec")


def _strings(node, key: str):
    """``(dotted key, string)`` for every string in a YAML value (keys included: they are text too)."""
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            sub = f"{key}.{short_name(k)}" if key else short_name(k)
            yield from _strings(k, sub)
            yield from _strings(v, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{key}.{i}")


def check_env(env: dict, where: Path) -> None:
    """``runtime_env.env_vars``: strings only, and none of the variables the driver's ``ray.init`` sets."""
    from ..train.launch import RAY_ENV

    env_vars = env.get("env_vars") or {}
    if not isinstance(env_vars, dict):
        raise ConfigError(f"{where}: runtime_env.env_vars must map names to strings, got {short(env_vars)}")
    bad = sorted(set(env_vars) & set(RAY_ENV))
    if bad:  # the driver's ray.init sets these; Ray refuses a job env and a driver env that set the same key
        raise ConfigError(f"{where}: runtime_env.env_vars must not set {', '.join(bad)} (emonet sets them itself)")
    if any(not isinstance(v, str) for v in env_vars.values()):
        raise ConfigError(f"{where}: runtime_env.env_vars values must be strings (quote numbers)")


def check_shared_paths(cfg: Config) -> None:
    """Refuse relative paths in a submitted config: they would resolve inside the job's temporary directory."""
    paths = {"output_dir": cfg.output_dir, "data.shards": cfg.data.shards, "ray.storage_path": cfg.ray.storage_path,
             "train.init_from": cfg.train.init_from}
    rel = [k for k, v in paths.items() if v and not URL.match(v) and not v.startswith("/") and "{path}" not in v]
    if rel:
        raise ConfigError(f"{', '.join(rel)} must be absolute paths on storage every node sees, or URLs: a job runs "
                          f"in a temporary directory on the cluster (override them, e.g. {rel[0]}=/mnt/shared/...)")


def expand_path(text: str) -> Path:
    """A path from a spec: ``$VARS`` and ``~`` expanded (an unset variable was refused when the spec loaded)."""
    return Path(os.path.expanduser(os.path.expandvars(text)))
