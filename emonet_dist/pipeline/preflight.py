"""What a job needs before its first step, checked where the job runs (a submitted job's driver, ``emonet jobs
run``, ``emonet demo``): its shared storage mounted, and the inputs that no earlier step of the job makes (shards of
the corpora it trains on, raw corpora it prepares, prepared corpora a baseline reads).

A job that lacks one fails within seconds, before it creates anything or starts Ray, and the error names what is
missing and where. Without these checks a job found out in its first Ray Train run, minutes in; and a job on a node
without the cluster's mount (``/mnt/emonet``) would create that directory on the node's own disk and run there.
Remote shards (``http(s)://``, ``pipe:``) are not fetched here: their reader fails within its timeouts.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config
from ..errors import EmonetError, short
from .checks import URL, expand_path
from .spec import BaselineStep, GridStep, JobSpec, PrepareStep, Step, SynthStep, TrainStep, TransferStep, TuneStep
from .steps import corpora_dir, used_corpora

PATH_KEYS = ("output_dir", "data.shards", "ray.storage_path", "train.init_from")
"""Config keys that name local directories a job reads or writes."""


def preflight(spec: JobSpec, cfg: Config) -> None:
    """Raise :class:`EmonetError` naming the first thing the job lacks; ``cfg`` is the job's config where it runs."""
    check_storage(spec, cfg)
    check_inputs(spec, cfg)


def step_config(step: Step, cfg: Config) -> Config:
    """The job's config with a step's own overrides (what its run reads, paths and corpora included)."""
    return cfg.override(*getattr(step, "overrides", ()))


def local_path(value: str) -> Path | None:
    """A config path as an absolute local path; None for URLs, ``pipe:`` templates and unset values."""
    if not value or URL.match(value) or "{path}" in value:
        return None
    return Path(os.path.abspath(expand_path(value)))


def check_storage(spec: JobSpec, cfg: Config) -> None:
    """The spec's shared storage exists when any of the job's paths lie under it: a job never creates its mount."""
    if not spec.storage:
        return
    root = Path(spec.storage)
    under: dict[str, None] = {}
    for c in [cfg, *(step_config(s, cfg) for s in spec.steps)]:
        flat = c.flat()
        for key in PATH_KEYS:
            p = local_path(str(flat.get(key) or ""))
            if p is not None and (p == root or root in p.parents):
                under[key] = None
    if under and not root.is_dir():
        keys = list(under)
        raise EmonetError(f"shared storage {short(str(root), 120)} not found on this node ({', '.join(keys)} "
                          f"{'is' if len(keys) == 1 else 'are'} under it): mount it, or point the paths at storage "
                          f"this cluster has (e.g. {keys[0]}=/path/on/shared/storage)")


def _method_steps(grid: GridStep) -> list[Step]:
    """A grid's method steps (their shards and prepared corpora are what the grid's runs read)."""
    return [s for steps in grid.methods.values() for s in steps]


def check_inputs(spec: JobSpec, cfg: Config) -> None:
    """Inputs no earlier step makes: shards of trained corpora, raw corpora to prepare, corpora a baseline reads."""
    made: set[str] = set()  # corpora that earlier synth and prepare steps write (corpora dir and shards)
    missing: list[str] = []
    for step in (s for st in spec.steps for s in (_method_steps(st) if isinstance(st, GridStep) else [st])):
        if isinstance(step, SynthStep):
            from ..corpora.synth import CORPORA

            made.update(step.names or used_corpora(spec) or CORPORA)
        elif isinstance(step, PrepareStep):
            from ..corpora.recipes import get_recipe

            raw = expand_path(step.raw)
            if not raw.is_dir():
                missing.append(f"raw corpus {short(str(raw), 120)} (step {step.id})")
            made.add(step.corpus or get_recipe(step.recipe).NAME)
        elif isinstance(step, BaselineStep):
            missing += [f"prepared corpus {short(str(d), 120)} (step {step.id})"
                        for c in step.corpora if c not in made
                        and not ((d := corpora_dir(cfg, "") / c) / "manifest.jsonl").is_file()]
        elif isinstance(step, (TrainStep, TuneStep, TransferStep)):
            c = step_config(step, cfg)
            root = local_path(c.data.shards)
            names = [step.corpus] if isinstance(step, TransferStep) else [x.name for x in c.data.corpora]
            for n in names if root is not None else ():
                if n not in made and not (root / n / "index.json").is_file():
                    missing.append(f"no shards for corpus '{n}' at {short(str(root / n / 'index.json'), 120)} "
                                   f"(step {step.id})")
                    made.add(n)  # reported once
    if missing:
        first = missing[0] if missing[0].startswith("no shards") else f"not found: {missing[0]}"
        rest = missing[1:]
        more = f"; also {'; '.join(rest[:3])}{f' and {len(rest) - 3} more' if len(rest) > 3 else ''}" if rest else ""
        raise EmonetError(f"{first}{more}. Nothing ran: create them (emonet corpus prepare, emonet shard) or add "
                          f"the steps that make them")
