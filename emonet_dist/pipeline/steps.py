"""One function per step kind: what ``emonet jobs run``, a submitted job's driver and ``emonet demo`` execute.

Each takes the typed step and the job's :class:`JobContext` and returns the step's run record (``None`` for
steps that make no run). Runs are kept in the context by step id, so later steps (transfer, report) find them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, PrepareConfig, ShardConfig
from ..errors import EmonetError, short
from .checks import expand_path
from .spec import (
    BaselineStep,
    JobSpec,
    PrepareStep,
    ReportColumn,
    ReportStep,
    Step,
    SynthStep,
    TrainStep,
    TransferStep,
    TuneStep,
)

log = logging.getLogger(__name__)
SYNTH_STAMP = "synth.json"
"""Written next to the synthetic corpora: the seed they were built with (another seed rebuilds them)."""


@dataclass
class JobContext:
    """What the steps of one job share: the job's config (adapted to where it runs), the tags of its runs, and
    the runs and reports made so far, by step id."""

    spec: JobSpec
    config: Config
    tags: dict[str, str]
    runs: dict[str, Any] = field(default_factory=dict)
    """Step id -> ``RunResult`` of train, transfer and baseline steps."""
    reports: dict[str, dict] = field(default_factory=dict)
    """Step id -> ``{"report": report.json's content, "dir": Path, "run_id": MLflow run id or None}``."""


def record(step: Step, run: str, run_dir, run_id: str | None, uri: str | None, tracking_error: str | None = None
           ) -> dict:
    """A step's run record; ``tracking: "incomplete"`` when the run finished but its MLflow copy did not."""
    rec = {"step": step.id, "run": run, "dir": str(run_dir), "mlflow_run_id": run_id, "tracking_uri": uri}
    return {**rec, "tracking": "incomplete"} if tracking_error else rec


def corpora_dir(cfg: Config, text: str) -> Path:
    """A step's ``corpora_dir``, or the default next to the shards (``data.shards/../corpora``)."""
    return expand_path(text) if text else Path(cfg.data.shards).parent / "corpora"


def used_corpora(spec: JobSpec) -> list[str]:
    """The corpora the job's train, tune and transfer steps use, in order of appearance."""
    names: dict[str, None] = {}
    for st in spec.steps:
        if isinstance(st, (TrainStep, TuneStep)):
            names.update(dict.fromkeys(c.name for c in spec.config.override(*st.overrides).data.corpora))
        elif isinstance(st, TransferStep):
            names[st.corpus] = None
    return list(names)


def _built_seed(out: Path, default: int) -> int | None:
    """The seed the corpora in ``out`` were built with (no stamp: ``default``, they are trusted; unreadable: None)."""
    stamp = out / SYNTH_STAMP
    if not stamp.is_file():
        return default
    try:
        return json.loads(stamp.read_text()).get("seed")
    except (ValueError, AttributeError):
        return None


def synth(step: SynthStep, ctx: JobContext) -> None:
    from ..corpora.synth import CORPORA, build_synthetic
    from ..data.shards import shard_corpora, verify

    cfg = ctx.config
    names = list(step.names) or used_corpora(ctx.spec) or list(CORPORA)
    out = corpora_dir(cfg, step.corpora_dir)
    if _built_seed(out, cfg.seed) == cfg.seed and all((out / n / "manifest.jsonl").is_file() for n in names):
        log.info("[synth] reusing the corpora in %s (seed %d)", out, cfg.seed)
    else:
        build_synthetic(out, seed=cfg.seed, cfg=PrepareConfig(jobs=cfg.prepare.jobs), names=names)
        (out / SYNTH_STAMP).write_text(json.dumps({"seed": cfg.seed}))
    shard_corpora([out / n for n in names], cfg.data.shards, ShardConfig(samples_per_shard=step.samples_per_shard))
    if step.verify:
        checked, problems = verify(cfg.data.shards, names)
        if problems:
            raise EmonetError(f"shard verification failed: {problems[0]}")
        log.info("[synth] %d shards verified in %s", checked, cfg.data.shards)


def prepare(step: PrepareStep, ctx: JobContext) -> None:
    """A corpus prepared from the same raw directory with the same settings is reused (and finished shards are
    never rewritten)."""
    from ..corpora.prepare import prepare_corpus
    from ..corpora.recipes import get_recipe
    from ..data.shards import shard_corpora

    cfg = ctx.config
    raw = expand_path(step.raw)
    if "$" in str(raw):  # refused when the spec loaded in this process; a spec written out elsewhere may differ
        raise EmonetError(f"step {step.id}: raw {short(step.raw)} names an unset environment variable; set it "
                          f"(e.g. EMONET_REALDATA=/path/to/corpora) or override the step")
    raw = raw.resolve()
    name = step.corpus or get_recipe(step.recipe).NAME
    out = corpora_dir(cfg, step.corpora_dir) / name
    report = out / "report.json"
    old = json.loads(report.read_text()) if report.is_file() else {}
    settings = {k: v for k, v in asdict(cfg.prepare).items() if k != "allow_speaker_overlap"}
    if old.get("raw") == str(raw) and old.get("recipe") == step.recipe and \
            {k: v for k, v in old.get("prepare", {}).items() if k != "allow_speaker_overlap"} == settings:
        log.info("[prepare %s] reusing %s (same raw directory and settings)", name, out)
    else:
        prepare_corpus(step.recipe, raw, out, cfg.prepare, name=name)
    shard_corpora([out], cfg.data.shards, ShardConfig(samples_per_shard=step.samples_per_shard))


def baseline(step: BaselineStep, ctx: JobContext) -> dict:
    from ..baselines.egemaps import EgemapsConfig, run_egemaps_baseline

    cfg = ctx.config
    dirs = [corpora_dir(cfg, "") / c for c in step.corpora]
    missing = [str(d) for d in dirs if not (d / "manifest.jsonl").is_file()]
    if missing:
        raise EmonetError(f"step {step.id}: no prepared corpus at {', '.join(missing)} (add a prepare step first)")
    res = ctx.runs[step.id] = run_egemaps_baseline(
        dirs, cfg, EgemapsConfig(), run_name=f"{cfg.name}-{step.id}-{time.strftime('%Y%m%d-%H%M%S')}")
    return record(step, res.name, res.dir, res.mlflow_run_id, res.tracking_uri, res.tracking_error)


def train(step: TrainStep, ctx: JobContext) -> dict:
    from ..train.launch import run_training

    res = ctx.runs[step.id] = run_training(ctx.config.override(*step.overrides),
                                           extra_tags={**ctx.tags, "job_step": step.id})
    return record(step, res.name, res.dir, res.mlflow_run_id, res.tracking_uri, res.tracking_error)


def transfer(step: TransferStep, ctx: JobContext) -> dict:
    from ..train.launch import run_training
    from ..train.transfer import transfer_config

    src = ctx.runs[step.source]
    cfg = transfer_config(str(src.dir), step.corpus, step.mode, list(step.overrides), task=step.task)
    res = ctx.runs[step.id] = run_training(cfg, extra_tags={**ctx.tags, "job_step": step.id,
                                                            "pretrained_from": src.name})
    return record(step, res.name, res.dir, res.mlflow_run_id, res.tracking_uri, res.tracking_error)


def tune(step: TuneStep, ctx: JobContext) -> dict:
    from ..tuning import format_table, run_sweep

    summary = run_sweep(ctx.config.override(*step.overrides), dict(step.space))
    log.info("%s", format_table(summary))
    return record(step, Path(summary["sweep_dir"]).name, summary["sweep_dir"], summary.get("parent_run_id"),
                  summary.get("tracking_uri"))


def _column(col: str | ReportColumn, runs: dict) -> tuple[str, str]:
    """A report column as (reference for build_report, label)."""
    def ref(item: str) -> str:
        sid, _, ck = item.partition("@")
        return f"{runs[sid].dir}@{ck}" if ck else str(runs[sid].dir)

    if isinstance(col, ReportColumn):
        return ",".join(ref(i) for i in col.runs), col.label or "+".join(col.runs)
    return ref(col), col


def report(step: ReportStep, ctx: JobContext) -> dict:
    from ..evaluate.report import build_report, log_report_run
    from ..evaluate.report_format import format_table

    cfg, runs = ctx.config, ctx.runs
    base = _column(step.baseline, runs)
    cands = [_column(c, runs) for c in step.candidates]
    root = Path(cfg.output_dir) / expand_path(step.reports_dir or "reports")  # an absolute reports_dir wins
    out = root.resolve() / f"{step.id}-{time.strftime('%Y%m%d-%H%M%S')}"
    rep = build_report(base[0], [c[0] for c in cands], out, checkpoint=step.checkpoint, labels=dict([base, *cands]))
    log.info("%s\nreport: %s (html, json, csv, uar_delta.png)", format_table(rep), out / "report.md")
    uri = next((r.tracking_uri for r in runs.values() if r.tracking_uri), None)
    run_id = log_report_run(rep, uri, cfg.tracking.experiment, out) if uri else None
    ctx.reports[step.id] = {"report": rep, "dir": out, "run_id": run_id}
    return record(step, out.name, out, run_id, uri)


STEPS = {"synth": synth, "prepare": prepare, "baseline": baseline, "train": train, "transfer": transfer,
         "tune": tune, "report": report}
"""Step kind -> its function (every kind of :data:`emonet_dist.pipeline.spec.KINDS`)."""
