"""Job specs as typed dataclasses, loaded by the config's strict loader (:func:`emonet_dist.typed.from_dict`).

A job spec (``jobs/*.job.yaml``, ``jobs/submit/*.job.yaml``, the demo's ``emonet_dist/specs/demo_job.yaml``)
**embeds** its config instead of pointing at a file: what is checked is exactly what runs, a cluster never needs
the submitter's checkout, and the spec is the whole record of the experiment. Keys::

    name, description
    config:       a config tree (partial: defaults fill the rest)
    steps:        run in order by :func:`emonet_dist.pipeline.runner.run_spec`; each has an id and one of
                  {run: synth, corpora_dir, names, samples_per_shard, verify}   build + shard the synthetic corpora
                  {run: train, overrides}                                emonet train
                  {run: transfer, from, corpus, mode, task, overrides}   emonet transfer (from: an earlier step)
                  {run: tune, space, overrides}                          emonet tune (dotted keys -> distributions)
                  {run: prepare, recipe, raw, corpus, corpora_dir, samples_per_shard}   corpus prepare + shard
                  {run: baseline, corpora}                               eGeMAPS + linear SVM on prepared corpora
                  {run: report, baseline, candidates, checkpoint, reports_dir}   McNemar report of earlier runs
                  {run: grid, folds, dev, seeds, methods, baseline, checkpoint, max_parallel}   folds x seeds x
                                                         methods (each method: its own steps), pooled report
    profiles:     named override lists (``--profile paper``, the demo's ``smoke``)
    extends, groups:  reuse another spec's config and steps, keep only some step groups (the child's keys win;
                  config merges key by key, profiles name by name)
    runtime_env:  Ray's (pip pins, env_vars such as MLFLOW_TRACKING_URI, py_modules, working_dir)
    storage:      the shared storage every node mounts (``/mnt/emonet``): a job whose paths lie under it checks
                  that it exists before its first step and never creates it (:mod:`emonet_dist.pipeline.preflight`)
    entrypoint_num_cpus: CPUs reserved for a submitted job's driver (default 0: it only orchestrates)

A report column is a step id, ``id@best`` / ``id@final``, or ``{label: NAME, runs: [id, ...]}`` (per-corpus runs
merged into one column). ``raw``, ``corpora_dir`` and ``reports_dir`` expand ``$VARS`` and ``~``.

The profile and the command-line overrides apply to the config and again, after each step's own overrides, to
every train, transfer and tune step (a transfer keeps its own name, corpus, schedule, mode and init, see
:data:`TRANSFER_SETS`): ``emonet demo --smoke`` shrinks the transfer runs too, and a submitted spec (steps
written out with their overrides) runs exactly what was loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import typed
from ..config import Config
from ..errors import ConfigError, short, short_list
from ..names import check_name
from .checks import URL, check_env, check_vars, raw_spec

MAX_ID = 60
"""Longest step id: ids are quoted in errors and name runs."""
YAML_KEYS = {"source": "from"}
"""Field names that are Python keywords in YAML (``from: pretrain``)."""


@dataclass(frozen=True)
class Step:
    """What every step has: its ``id`` (default ``<run><index>``), its kind ``run`` and an optional ``group``."""

    id: str = ""
    run: str = ""
    group: str = ""

    def to_dict(self) -> dict:
        return {YAML_KEYS.get(k, k): v for k, v in typed.to_dict(self).items()}


@dataclass(frozen=True)
class SynthStep(Step):
    """Build the built-in synthetic corpora (reused when built with the same seed) and shard them."""

    corpora_dir: str = ""
    """Default: ``data.shards/../corpora``."""
    names: tuple[str, ...] = ()
    """Default: the corpora the job's train, transfer and tune steps use."""
    samples_per_shard: int = 64
    verify: bool = False
    """Decode every shard afterwards and fail on the first problem."""


@dataclass(frozen=True)
class PrepareStep(Step):
    """``emonet corpus prepare`` + ``emonet shard`` for one real corpus in its official layout."""

    recipe: str = ""
    raw: str = ""
    corpus: str = ""
    """Default: the recipe's corpus name."""
    corpora_dir: str = ""
    samples_per_shard: int = 64


@dataclass(frozen=True)
class BaselineStep(Step):
    """eGeMAPS + linear SVM on corpora prepared by earlier steps."""

    corpora: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainStep(Step):
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransferStep(Step):
    source: str = ""
    """``from`` in YAML: an earlier train/transfer step (default: the last one)."""
    corpus: str = ""
    mode: str = ""
    task: Literal["emotion", "arousal", "valence", "speaker"] = "emotion"
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class TuneStep(Step):
    space: dict[str, str] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportColumn:
    """Per-corpus runs merged into one report column."""

    runs: tuple[str, ...]
    label: str = ""


@dataclass(frozen=True)
class ReportStep(Step):
    baseline: str | ReportColumn | None = None
    candidates: tuple[str | ReportColumn, ...] = ()
    checkpoint: Literal["best", "final"] = "best"
    reports_dir: str = ""
    """Where ``<id>-<time>/`` goes: absolute, or relative to output_dir (default ``reports``)."""


@dataclass(frozen=True)
class GridStep(Step):
    """Folds x seeds x methods as one unit (:mod:`.grid`): every method's steps run once per test fold and seed,
    on corpora prepared with ``prepare.split=folds`` and ``prepare.num_folds=folds`` (partitions fold1..foldK)."""

    folds: int = 0
    """K: fold i is the test set of the runs of cell i, for i = 1..K."""
    dev: Literal["next", "train"] = "next"
    """The rotation: ``next`` makes fold i+1 (mod K) the dev set and trains on the rest; ``train`` has no dev
    fold (model selection on the training folds; for K = 2, where a dev fold would leave nothing to train on)."""
    seeds: tuple[int, ...] = (0,)
    """Each seed sets ``seed`` and ``data.seed`` of the runs (a method of baseline steps only runs once per fold:
    eGeMAPS + SVM is deterministic)."""
    methods: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """Method name -> its steps (train, transfer, baseline; transfers refer to steps of the same method). A
    method's predictions come from its last steps: those no later step of the method builds on."""
    baseline: str = ""
    """The method the report compares the others with (default: the first)."""
    checkpoint: Literal["best", "final"] = "best"
    train_folds: dict[str, int] = field(default_factory=dict)
    """Method -> how many of a cell's training folds its runs train on (default: all of them): the first n after
    the dev fold, in rotation order. The test folds stay the same, so the pooled predictions still cover every
    utterance once; a method with fewer training speakers is a point of a data-size learning curve."""
    max_parallel: int = 0
    """At most this many runs at once (0: as many as the cluster's CPUs and GPUs hold)."""

    def to_dict(self) -> dict:
        return {**super().to_dict(), "methods": {m: [s.to_dict() if isinstance(s, Step) else s for s in steps]
                                                 for m, steps in self.methods.items()}}


KINDS: dict[str, type[Step]] = {"synth": SynthStep, "train": TrainStep, "prepare": PrepareStep,
                                "baseline": BaselineStep, "transfer": TransferStep, "tune": TuneStep,
                                "report": ReportStep, "grid": GridStep}
RUN_KINDS = ("train", "transfer", "baseline")
"""Steps whose runs a transfer or report can refer to."""
TRANSFER_SETS = ("name", "data.corpora", "train.schedule", "train.mode", "train.init_from")
"""Keys a transfer run derives from its source run and step: job-wide overrides of them (a profile that pretrains
on other corpora) stay with the other steps; a transfer step's own overrides still set them."""


def step_keys(kind: str) -> list[str]:
    """The YAML keys a step of ``kind`` takes besides id, run and group."""
    own = {f.name for f in dataclasses.fields(KINDS[kind])} - {f.name for f in dataclasses.fields(Step)}
    return sorted(YAML_KEYS.get(k, k) for k in own)


@dataclass(frozen=True)
class SpecFile:
    """A job spec file as written (its ``extends`` chain merged): what :func:`load_spec` resolves."""

    config: dict[str, Any]
    steps: tuple[dict[str, Any], ...]
    name: str = ""
    description: str = ""
    runtime_env: dict[str, Any] = field(default_factory=dict)
    entrypoint_num_cpus: float = 0.0
    extends: str = ""
    groups: tuple[str, ...] = ()
    profiles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    storage: str = ""

    def __post_init__(self) -> None:
        if not math.isfinite(self.entrypoint_num_cpus) or self.entrypoint_num_cpus < 0:
            raise ConfigError(f"entrypoint_num_cpus must be a number >= 0, got {short(self.entrypoint_num_cpus)}",
                              key="entrypoint_num_cpus")
        if self.storage and (not self.storage.startswith("/") or URL.match(self.storage)
                             or ".." in Path(self.storage).parts or len(Path(self.storage).parts) < 2):
            raise ConfigError(f"storage must be an absolute directory below / (a mount point such as /mnt/emonet), "
                              f"got {short(self.storage)}", key="storage")


@dataclass(frozen=True)
class JobSpec:
    """A loaded spec: the resolved config (profile and overrides applied), the selected, checked steps."""

    name: str
    description: str
    config: Config
    steps: tuple[Step, ...]
    runtime_env: dict
    entrypoint_num_cpus: float = 0.0
    storage: str = ""
    """Shared storage that must exist wherever the job runs, if any of its paths lie under it."""

    def to_dict(self) -> dict:
        """The spec as ``emonet submit`` ships it: the full config, the steps with their overrides."""
        return {"name": self.name, "description": self.description, "config": self.config.to_dict(),
                "steps": [s.to_dict() for s in self.steps], "runtime_env": self.runtime_env,
                "entrypoint_num_cpus": self.entrypoint_num_cpus, **({"storage": self.storage} if self.storage else {})}


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = (), profile: str | None = None,
              groups: list[str] | tuple[str, ...] = (), runs_here: bool = False,
              values: dict[str, Any] | None = None) -> JobSpec:
    """Load and check a job spec: its ``extends`` chain, a ``profiles`` entry, the command-line ``overrides`` and
    a selection of step ``groups``. ``runs_here``: the steps run in this process (``emonet jobs run``), so
    ``$VARS`` must be set here, not just in ``runtime_env``. ``values``: typed config values a caller derives
    (the demo's output folder), set before the profile and the overrides, which win."""
    path = Path(path)
    data = raw_spec(path, set())
    keys = [f.name for f in dataclasses.fields(SpecFile)]
    unknown = sorted(map(str, set(data) - set(keys)))
    if unknown or "config" not in data or "steps" not in data:
        raise ConfigError(f"{path}: a job spec has the keys {', '.join(sorted(keys))} (config and steps are "
                          f"required){'; unknown: ' + short_list(unknown) if unknown else ''}")
    clean = {k: v for k, v in data.items() if v is not None or k == "steps"}
    try:
        spec = typed.from_dict(SpecFile, {**clean, "config": clean.get("config", {}), "steps": data["steps"] or []})
        if profile and profile not in spec.profiles:
            raise ConfigError(f"no profile {short(profile)} (profiles: {short_list(spec.profiles) or 'none'})")
        user = (*(spec.profiles[profile] if profile else ()), *overrides)
        cfg = typed.from_dict(Config, spec.config, "config").replace(values or {}).override(*user)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    check_env(spec.runtime_env, path)
    raw_steps = list(spec.steps)
    wanted = list(groups) or list(spec.groups)
    if wanted:
        known = {st.get("group") for st in raw_steps if isinstance(st.get("group"), str) and st.get("group")}
        if set(wanted) - known:
            raise ConfigError(f"{path}: no step has group {short_list(sorted(map(str, set(wanted) - known)))} "
                              f"(groups: {short_list(sorted(known))})")
        raw_steps = [st for st in raw_steps if st.get("group") in wanted]
    check_vars(data, raw_steps, profile, path, runs_here)
    name = check_name(spec.name or path.stem.removesuffix(".job"), f"{path}: job name")  # names runs and files
    return JobSpec(name, spec.description, cfg, typed_steps(raw_steps, cfg, path, user), dict(spec.runtime_env),
                   spec.entrypoint_num_cpus, spec.storage)


def typed_steps(raw: list[dict], cfg: Config, where: Path, user: tuple[str, ...] = ()) -> tuple[Step, ...]:
    """Each step strictly typed, its references to earlier steps resolved and checked; ``user`` (profile and
    command-line overrides) appended to the overrides of train, transfer and tune steps."""
    if not raw:
        raise ConfigError(f"{where}: steps must be a non-empty list")
    steps: list[Step] = []
    runs: list[str] = []  # ids of the earlier steps that produce a run
    for i, item in enumerate(raw):
        kind = item.get("run")
        if not isinstance(kind, str) or kind not in KINDS:
            raise ConfigError(f"{where}: steps[{i}] needs run: one of {', '.join(KINDS)}")
        sid = item.get("id") or f"{kind}{i}"
        if not isinstance(sid, str) or len(sid) > MAX_ID:  # ids are quoted in errors
            raise ConfigError(f"{where}: steps[{i}]: id must be a string of at most {MAX_ID} characters, got "
                              f"{short(item['id'])}")
        check_name(sid, f"{where}: step id")  # ids name runs
        extra = sorted(map(str, set(item) - set(step_keys(kind)) - {"run", "id", "group"}))
        if extra or sid in {s.id for s in steps}:
            what = f"unknown key(s) {short_list(extra)}" if extra else "duplicate id"
            raise ConfigError(f"{where}: step {sid}: {what} (a {kind} step takes {', '.join(step_keys(kind))})")
        fields = {k: v for k, v in item.items() if v is not None}
        fields = {next((f for f, y in YAML_KEYS.items() if y == k), k): v for k, v in fields.items()}
        try:
            step = typed.from_dict(KINDS[kind], {**fields, "id": sid}, f"steps.{i}")
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        step = check_step(step, cfg, runs, where)
        if isinstance(step, GridStep):
            step = check_grid(step, lambda raw, w: typed_steps(raw, cfg, w, user), where)
        if user and hasattr(step, "overrides"):
            step = dataclasses.replace(step, overrides=(*step.overrides, *job_wide(step, user)))
        runs += [sid] if kind in RUN_KINDS else []
        steps.append(step)
    return tuple(steps)


def job_wide(step: Step, user: tuple[str, ...]) -> tuple[str, ...]:
    """The profile and command-line overrides that apply to ``step`` (see :data:`TRANSFER_SETS`)."""
    if not isinstance(step, TransferStep):
        return user
    keys = [o.split("=", 1)[0].strip() for o in user]
    return tuple(o for o, k in zip(user, keys) if not any(k == t or k.startswith(t + ".") for t in TRANSFER_SETS))


def check_step(step: Step, cfg: Config, runs: list[str], where: Path) -> Step:
    """What would fail later in a step, checked now: overrides, references, search spaces, recipes, paths."""
    from ..train.transfer import MODES
    from ..tuning import parse_space

    sid = step.id
    try:
        base = cfg.override(*getattr(step, "overrides", ()))  # a bad override fails here, naming the key
    except ConfigError as exc:
        raise ConfigError(f"{where}: step {sid}: {exc}") from None
    if isinstance(step, TransferStep):
        step = dataclasses.replace(step, source=step.source or (runs[-1] if runs else ""))
        if step.source not in runs or step.mode not in MODES or not step.corpus:
            raise ConfigError(f"{where}: step {sid}: transfer needs corpus, mode (one of {', '.join(MODES)}) and "
                              f"from: an earlier train/transfer step ({short_list(runs, 20) or 'none yet'})")
        check_name(step.corpus, f"{where}: step {sid}: corpus")
    elif isinstance(step, TuneStep):
        parse_space(step.space, base)
    elif isinstance(step, ReportStep):
        cols = [step.baseline, *(step.candidates or [None])]
        missing = [r for c in cols for r in column_steps(c) if r not in runs] + [c for c in cols if not column_steps(c)]
        if missing:
            raise ConfigError(f"{where}: step {sid}: report needs baseline and candidates from earlier "
                              f"train/transfer/baseline steps ({short_list(runs, 20) or 'none yet'}); not found: "
                              f"{short_list(map(str, missing))}")
    elif isinstance(step, PrepareStep):
        from ..corpora.recipes import get_recipe

        if not step.recipe or len(step.recipe) > MAX_ID or not step.raw:
            raise ConfigError(f"{where}: step {sid}: prepare needs recipe and raw (the corpus in its official "
                              f"layout)")
        get_recipe(step.recipe)  # an unknown recipe fails here, listing the known ones
        if step.corpus:
            check_name(step.corpus, f"{where}: step {sid}: corpus")
    elif isinstance(step, BaselineStep):
        if not step.corpora:
            raise ConfigError(f"{where}: step {sid}: baseline needs corpora (names of corpora prepared earlier)")
        for name in step.corpora:  # they name directories
            check_name(name, f"{where}: step {sid}: corpus")
    if isinstance(step, (PrepareStep, SynthStep)) and URL.match(base.data.shards):
        raise ConfigError(f"{where}: step {sid}: {step.run} writes shards into data.shards, which must be a "
                          f"directory")
    return step


def check_grid(step: GridStep, type_steps, where: Path) -> GridStep:
    """A grid's folds, seeds and baseline checked, and each method's steps typed by ``type_steps(raw, where)``
    (train, transfer and baseline steps; a transfer builds on a step of its own method)."""
    sid = step.id
    problems = [
        (step.folds < 2, f"folds must be at least 2, got {step.folds}"),
        (step.dev == "next" and step.folds < 3, f"dev: next needs at least 3 folds (test, dev and training folds), "
                                                f"got {step.folds}; use dev: train"),
        (not step.seeds or len(set(step.seeds)) < len(step.seeds), "seeds must be a non-empty list of distinct seeds"),
        (len(step.methods) < 2, "methods must name at least two methods (a baseline and one to compare)"),
        (step.max_parallel < 0, f"max_parallel must be >= 0, got {step.max_parallel}"),
        (bool(step.baseline) and step.baseline not in step.methods,
         f"baseline {short(step.baseline)} is not one of the methods ({short_list(step.methods)})")]
    bad = next((text for failed, text in problems if failed), "") or train_folds_problem(step)
    if bad:
        raise ConfigError(f"{where}: step {sid}: {bad}")
    methods = {}
    for name, raw in step.methods.items():
        check_name(name, f"{where}: step {sid}: method")
        if not raw or not all(isinstance(r, dict) and r.get("run") in ("train", "transfer", "baseline") for r in raw):
            raise ConfigError(f"{where}: step {sid}: method {name} needs a list of train, transfer or baseline steps")
        methods[name] = type_steps(list(raw), Path(f"{where}: step {sid}: method {name}"))
    return dataclasses.replace(step, methods=methods)


def train_folds_problem(step: GridStep) -> str:
    """What is wrong with a grid's ``train_folds`` ("" when nothing): known methods, 1..the cell's training folds."""
    available = step.folds - 1 - (step.dev == "next")
    for method, n in step.train_folds.items():
        if method not in step.methods:
            return f"train_folds names {short(method)}, which is not one of the methods ({short_list(step.methods)})"
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= available:
            return (f"train_folds of {short(method)} must be a whole number from 1 to {available} (the training folds "
                    f"of a cell with {step.folds} folds and dev: {step.dev}), got {short(str(n))}")
    return ""


def column_steps(col: str | ReportColumn | None) -> list[str]:
    """The step ids of a report column: ``id``, ``id@best|final`` or ``{label, runs: [...]}``."""
    if isinstance(col, ReportColumn):
        return [r.rsplit("@", 1)[0] for r in col.runs]
    return [col.rsplit("@", 1)[0]] if col else []
