"""``emonet``: the command line. It parses the arguments and dispatches to the commands (:mod:`.cli_commands`,
:mod:`.cli_jobs`), which call into the packages.

Every command takes ``--config FILE.yaml`` and trailing ``section.key=value`` overrides; its own flags that set
config keys come from one table, :data:`CONFIG_FLAGS` (``--seed`` on ``corpus prepare`` is ``prepare.seed``),
typed and with choices from the config tree itself, so a flag cannot drift from its key and what a command ran
with can always be written back as one YAML.

Errors the user can fix are printed as one line (``error: ...``) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import typing

from . import cli_commands as c
from . import cli_jobs as j
from .cli_parser import Parser
from .config import Config
from .errors import EmonetError
from .log import setup_console

CONFIG_FLAGS: dict[str, dict[str, str | tuple[str, str]]] = {
    "corpus prepare": {
        "--split": "prepare.split", "--folds": ("prepare.num_folds", "folds for --split folds (0: one per group)"),
        "--seed": "prepare.seed", "--dev-fraction": "prepare.dev_fraction", "--test-fraction": "prepare.test_fraction",
        "--allow-speaker-overlap": ("prepare.allow_speaker_overlap",
                                    "accept partitions that share speakers (scores are then not speaker-independent)"),
        "--check": ("prepare.check_audio", "decode every file (default) or read headers"),
        "--jobs": ("prepare.jobs", "worker processes (0: all cores)")},
    "corpus synth": {"--seed": "prepare.seed", "--jobs": "prepare.jobs"},
    "corpus partition": {"--split": "prepare.split", "--folds": "prepare.num_folds", "--seed": "prepare.seed",
                         "--allow-speaker-overlap": "prepare.allow_speaker_overlap"},
    "shard": {"--samples-per-shard": "shard.samples_per_shard", "--jobs": "shard.jobs"},
    "train": {"--address": ("ray.address", "join a running Ray cluster (default: start Ray locally)")},
    "tune": {"--num-samples": "tune.num_samples", "--scheduler": "tune.scheduler", "--search": "tune.search",
             "--max-concurrent": "tune.max_concurrent",
             "--objective": ("tune.objective", "'mean' (mean dev UAR) or a corpus name")},
    "baseline egemaps": {"--out": ("output_dir", "runs, mlflow.db and the feature cache (default: runs)")},
}
"""Command -> its flags that set config keys: ``flag: key`` or ``flag: (key, help)``."""


def config_type(key: str):
    """The annotation of a dotted config key (``prepare.seed`` -> ``int``)."""
    tp: typing.Any = Config
    for part in key.split("."):
        tp = typing.get_type_hints(tp)[part]
    return tp


def add_config_flags(p: argparse.ArgumentParser, command: str) -> None:
    """Add the flags of ``command`` from :data:`CONFIG_FLAGS`: type, choices and help from the config tree."""
    for flag, entry in CONFIG_FLAGS[command].items():
        key, text = (entry, "") if isinstance(entry, str) else entry
        tp = config_type(key)
        kwargs: dict[str, typing.Any] = {"dest": c.CONFIG_DEST + key,
                                         "help": f"{text + '; ' if text else ''}sets {key}"}
        if tp is bool:
            kwargs.update(action="store_const", const=True)
        elif typing.get_origin(tp) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        else:
            kwargs.update(type=tp, metavar=flag.lstrip("-").upper().replace("-", "_"))
        p.add_argument(flag, **kwargs)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.yaml", help="config file (defaults apply to missing keys)")
    p.epilog = "Any number of KEY=VALUE config overrides may follow, e.g. prepare.seed=3 data.batch_size=16."


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 (nan, inf, 0 and negatives are refused in one line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:20]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text[:20]!r}")
    return value


def _corpus_parsers(sub) -> None:
    corpus = sub.add_parser("corpus", help="prepare corpora: recipes, synthetic corpora, checks")
    csub = corpus.add_subparsers(dest="corpus_command", required=True, parser_class=Parser)
    prep = csub.add_parser("prepare", help="parse a raw corpus into manifest.jsonl + report.json")
    prep.add_argument("recipe", help="recipe name (see `emonet corpus recipes`)")
    prep.add_argument("raw_dir", metavar="RAW_DIR", help="raw corpus root in its official layout (a CSV for `csv`)")
    prep.add_argument("--out", required=True, metavar="CORPUS_DIR")
    prep.add_argument("--name", help="corpus name (default: the recipe name)")
    add_config_flags(prep, "corpus prepare")
    _common(prep)
    prep.set_defaults(func=c.cmd_corpus_prepare)

    synth = csub.add_parser("synth", help="build the built-in synthetic corpora (demo and test data)")
    synth.add_argument("--out", required=True, metavar="DIR")
    synth.add_argument("--names", nargs="*", help="build only these corpora")
    add_config_flags(synth, "corpus synth")
    _common(synth)
    synth.set_defaults(func=c.cmd_corpus_synth)

    part = csub.add_parser("partition", help="re-partition an existing manifest (streams it; no audio is read)")
    part.add_argument("manifest", metavar="MANIFEST", help="manifest.jsonl or a corpus directory holding one")
    part.add_argument("--out", required=True, metavar="CORPUS_DIR")
    add_config_flags(part, "corpus partition")
    _common(part)
    part.set_defaults(func=c.cmd_corpus_partition)

    check = csub.add_parser("check", help="validate a prepared corpus (speaker-disjoint partitions) and summarise it")
    check.add_argument("corpus_dir", metavar="CORPUS_DIR")
    check.add_argument("--allow-speaker-overlap", action="store_true")
    check.set_defaults(func=c.cmd_corpus_check)

    rec = csub.add_parser("recipes", help="list the corpus recipes and the layouts they expect")
    rec.set_defaults(func=c.cmd_corpus_recipes)

    shard = sub.add_parser("shard", help="write WebDataset shards (or `emonet shard verify SHARD_DIR`)")
    shard.add_argument("paths", nargs="+", metavar="CORPUS_DIR", help="prepared corpus directories")
    shard.add_argument("--out", metavar="SHARD_DIR")
    add_config_flags(shard, "shard")
    shard.add_argument("--force", action="store_true", help="rewrite these corpora's shards from scratch")
    shard.add_argument("--quick", action="store_true", help="with `verify`: check sizes and sha256 only (no decoding)")
    _common(shard)
    shard.set_defaults(func=c.cmd_shard)


def _training_parsers(sub) -> None:
    model = sub.add_parser("model", help="inspect the model")
    msub = model.add_subparsers(dest="model_command", required=True, parser_class=Parser)
    summ = msub.add_parser("summary", help="shared vs per-corpus parameters, FLOPs per second of audio, shapes")
    summ.add_argument("--corpora", type=int, default=1, help="number of corpora in the model (default 1)")
    summ.add_argument("--classes", type=int, default=4, help="classes per corpus (default 4)")
    summ.add_argument("--seconds", type=float, default=3.0, help="input length for the shape trace (default 3 s)")
    _common(summ)
    summ.set_defaults(func=c.cmd_model_summary)

    train = sub.add_parser("train", help="train on Ray (multi-corpus round-robin or single corpus)")
    train.add_argument("config", nargs="?", metavar="CONFIG.yaml")
    train.add_argument("--resume", metavar="RUN", help="continue a stopped run (its directory or name)")
    add_config_flags(train, "train")
    train.epilog = "Any number of KEY=VALUE config overrides may follow, e.g. optim.lr=0.01 ray.num_workers=4."
    train.set_defaults(func=c.cmd_train)

    tr = sub.add_parser("transfer", help="train a new corpus on top of a pretrained run (single-corpus schedule)")
    tr.add_argument("--from", dest="source", required=True, metavar="RUN_OR_CHECKPOINT",
                    help="a finished run directory (or name under output_dir), or a model directory")
    tr.add_argument("--corpus", required=True, help="corpus name in the shard directory")
    tr.add_argument("--mode", required=True, choices=["adapters", "head", "finetune", "scratch", "zero-shared"])
    tr.add_argument("--task", default="emotion", choices=["emotion", "arousal", "valence", "speaker"])
    tr.epilog = "Any number of KEY=VALUE overrides may follow, e.g. train.patience=10 data.shards=/data/shards."
    tr.set_defaults(func=c.cmd_transfer)

    tune = sub.add_parser("tune", help="Ray Tune sweep over config keys (learning rate, lambda, ...)")
    tune.add_argument("config", nargs="?", metavar="CONFIG.yaml")
    tune.add_argument("--space", metavar="SPACE.yaml", help="dotted config keys -> distributions (jobs/spaces/)")
    add_config_flags(tune, "tune")
    tune.add_argument("--resume", metavar="SWEEP_DIR", help="continue an interrupted sweep")
    tune.epilog = "Any number of KEY=VALUE config overrides may follow."
    tune.set_defaults(func=c.cmd_tune)

    base = sub.add_parser("baseline", help="non-neural reference systems, recorded as runs `emonet report` reads")
    basesub = base.add_subparsers(dest="baseline_command", required=True, parser_class=Parser)
    bego = basesub.add_parser("egemaps", help="eGeMAPS functionals + linear SVM per corpus (C chosen on dev)")
    bego.add_argument("corpus_dirs", nargs="+", metavar="CORPUS_DIR", help="prepared corpus directories")
    add_config_flags(bego, "baseline egemaps")
    bego.add_argument("--name", help="run name (default: egemaps-svm-<date>-<time>-<hex>)")
    bego.add_argument("--jobs", type=int, help="feature extraction processes (0: all cores)")
    bego.add_argument("--cache-dir", help="eGeMAPS feature cache (default: OUT/cache/egemaps)")
    _common(bego)
    bego.set_defaults(func=c.cmd_baseline_egemaps)


def _bundle_parsers(sub) -> None:
    bundle = sub.add_parser("bundle", help="adapter bundles: export from a run, register in MLflow")
    bsub = bundle.add_subparsers(dest="bundle_command", required=True, parser_class=Parser)
    bex = bsub.add_parser("export", help="write one corpus's bundle (adapters, BNs, head + backbone pointer)")
    bex.add_argument("--run", required=True, help="run directory or name")
    bex.add_argument("--corpus", required=True)
    bex.add_argument("--out", required=True, metavar="DIR")
    bex.add_argument("--checkpoint", choices=["best", "final"], default="final")
    bex.add_argument("--output-dir", default="runs", help="where run names are looked up (default: runs)")
    bex.set_defaults(func=c.cmd_bundle_export)
    breg = bsub.add_parser("register", help="register a bundle as a new version of an MLflow model")
    breg.add_argument("bundle", metavar="BUNDLE_DIR")
    breg.add_argument("--name", required=True, help="registered model name")
    breg.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the bundle's run used)")
    breg.add_argument("--run-id", help="MLflow run to attach the files to (default: the bundle's training run)")
    breg.set_defaults(func=c.cmd_bundle_register)

    pred = sub.add_parser("predict", help="label audio files with an adapter bundle")
    pred.add_argument("--bundle", required=True, help="bundle directory, runs:/RUN_ID/PATH or models:/NAME/VERSION")
    pred.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    pred.add_argument("--backbone", help="backbone directory (default: found from the bundle)")
    pred.add_argument("--format", choices=["table", "json", "csv"], default="table")
    pred.add_argument("--chunk-seconds", type=_seconds, default=10.0,
                      help="long files are cut into chunks (default 10; at least one STFT window)")
    pred.add_argument("--device", default="cpu")
    pred.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ references")
    pred.set_defaults(func=c.cmd_predict)


def _evaluation_parsers(sub) -> None:
    rep = sub.add_parser("report", help="significance report: baseline vs candidate runs (paper Table 4, McNemar)",
                         epilog="RUN is a run directory, run name or MLflow run id, optionally with @best or @final "
                                "(that run's checkpoint). Comma-joined RUNs form one column from per-corpus runs, "
                                "e.g. --candidate scratch-ravdess,scratch-emovo@final --label "
                                "scratch-ravdess,scratch-emovo@final=scratch-final.")
    rep.add_argument("--baseline", required=True, metavar="RUN", help="run directory, run name or MLflow run id")
    rep.add_argument("--candidate", required=True, action="append", metavar="RUN", help="repeat for more runs")
    rep.add_argument("--alpha", type=float, default=0.05, help="significance level of the +/- marks (default 0.05)")
    rep.add_argument("--checkpoint", choices=["best", "final"], default="best", help="which predictions to compare")
    rep.add_argument("--out", metavar="DIR", help="report directory (default: OUTPUT_DIR/reports/report-<time>)")
    rep.add_argument("--label", action="append", default=[], metavar="RUN=NAME", help="column name for a run")
    rep.add_argument("--output-dir", default="runs", help="where run names are looked up (default: runs)")
    rep.add_argument("--tracking-uri", help="MLflow URI for run ids and the report run (default: the baseline's)")
    rep.add_argument("--experiment", default="emonet-reports", help="MLflow experiment of the report run")
    rep.add_argument("--no-track", action="store_true", help="write the files only; no MLflow report run")
    rep.set_defaults(func=c.cmd_report)

    ev = sub.add_parser("evaluate", help="UAR, WA, per-class recall and confusion matrices of a run")
    ev.add_argument("--run", help="run directory or name: score its model on --split from its shards")
    ev.add_argument("--predictions", metavar="CSV_OR_RUN",
                    help="or score existing prediction CSVs (a CSV, a run, or an MLflow run id)")
    ev.add_argument("--split", choices=["dev", "test"], default="test")
    ev.add_argument("--out", metavar="DIR",
                    help="output directory (default for --run: <run>/eval/<split>-<checkpoint>)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--checkpoint", choices=["best", "final"], default="final")
    ev.add_argument("--output-dir", default="runs", help="where run names are looked up (default: runs)")
    ev.add_argument("--tracking-uri", help="MLflow tracking URI for run ids")
    ev.set_defaults(func=c.cmd_evaluate)

    track = sub.add_parser("track", help="MLflow housekeeping")
    tsub = track.add_subparsers(dest="track_command", required=True, parser_class=Parser)
    sync = tsub.add_parser("sync", help="complete a run's MLflow copy after an outage: the journal's missing "
                                        "metric points, artifacts, status (safe to repeat)")
    sync.add_argument("run", metavar="RUN", help="run directory or name")
    sync.add_argument("--tracking-uri", help="default: the URI the run was started with")
    sync.add_argument("--output-dir", default="runs")
    sync.set_defaults(func=c.cmd_track_sync)

    cfg = sub.add_parser("config", help="show the resolved config")
    csub = cfg.add_subparsers(dest="config_command", required=True, parser_class=Parser)
    show = csub.add_parser("show", help="print the config after --config and overrides, as YAML")
    _common(show)
    show.set_defaults(func=c.cmd_config_show)


def _job_parser(group, name: str, help: str, func, *, job_id=False, address=True, timeout=None, spec=False):
    p = group.add_parser(name, help=help)
    if job_id:
        p.add_argument("job_id", metavar="JOB_ID")
    if spec:
        p.add_argument("spec", metavar="JOB.yaml")
        p.add_argument("--profile", help="apply one of the spec's profiles (named overrides, e.g. paper)")
        p.add_argument("--group", action="append", default=[], metavar="GROUP",
                       help="run only the steps of this group (repeat for more)")
        p.epilog = "KEY=VALUE overrides of the embedded config may follow (they also apply to every run step)."
    if address:
        p.add_argument("--address", help="Ray job API (default: $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265)")
    if timeout:
        p.add_argument("--timeout", type=float, default=timeout, help=f"seconds (default {timeout:.0f})")
    p.set_defaults(func=func)
    return p


def _job_parsers(sub) -> None:
    s = _job_parser(sub, "submit", "submit a job spec (jobs/submit/*.job.yaml) to a Ray cluster", j.cmd_submit,
                    timeout=86400.0, spec=True)
    s.add_argument("--follow", action="store_true", help="stream the logs, print the MLflow runs, exit with the status")
    s.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="add a runtime_env variable")
    s.add_argument("--no-pip", action="store_true",
                   help="drop the spec's pip pins (the cluster's Python has them; implied for cluster/local, "
                        "whose env.sh names it)")
    s.epilog += " E.g. 'data.shards=pipe:aws s3 cp s3://bucket/shards/{path} -'."

    jobs = sub.add_parser("jobs", help="Ray jobs: list, logs, stop; `run` executes a spec here")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, parser_class=Parser)
    _job_parser(jsub, "list", "every job on the cluster, oldest first", j.cmd_jobs_list)
    logs = _job_parser(jsub, "logs", "a job's logs (and its error, if it failed)", j.cmd_jobs_logs, job_id=True,
                       timeout=86400.0)
    logs.add_argument("--follow", action="store_true", help="stream until the job ends; exit with its status")
    stop = _job_parser(jsub, "stop", "stop a running job", j.cmd_jobs_stop, job_id=True, timeout=120.0)
    stop.add_argument("--wait", action="store_true", help="wait until it has stopped")
    _job_parser(jsub, "run", "run a job spec's steps in this process (what a submitted job executes)",
                j.cmd_jobs_run, address=False, spec=True)

    demo = sub.add_parser("demo", help="run the whole pipeline on the built-in synthetic corpora (a shipped job spec)")
    demo.add_argument("--out", default="demo", help="output directory (default: ./demo)")
    demo.add_argument("--smoke", action="store_true",
                      help="tiny corpora, model and schedules: the same pipeline in about a minute")
    demo.epilog = "KEY=VALUE overrides of the demo's config may follow (they also apply to the transfer runs)."
    demo.set_defaults(func=j.cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="emonet", description="Distributed multi-corpus speech emotion recognition (EmoNet).")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=0,
                      help="print warnings and results only, no progress lines")
    loud.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity",
                      help="also print debug lines, with time and logger name")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (_corpus_parsers, _training_parsers, _bundle_parsers, _evaluation_parsers, _job_parsers):
        add(sub)
    return p


def _is_override(arg: str) -> bool:
    """``section.key=value`` or ``top_level_key=value`` for a key of the config tree (not a path or a label)."""
    m = re.match(r"^([a-z_][a-z0-9_]*)(\.[A-Za-z0-9_]+)*=", arg)
    return bool(m) and m.group(1) in {f.name for f in dataclasses.fields(Config)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # KEY=VALUE overrides may sit anywhere after the subcommand; argparse cannot interleave them with
    # positionals, so they are taken out first.
    overrides = [a for a in argv if _is_override(a)]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    saved = _settings_env()
    setup_console(args.verbosity)
    try:
        return int(args.func(args) or 0)
    except EmonetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _restore_settings_env(saved)


# A command exports settings for the processes it starts (EMONET_LOG_LEVEL from -q/-v; MLFLOW_TRACKING_URI from
# --tracking-uri, which MLflow's own set_tracking_uri exports too). main() puts them back on return, so that a
# program (or test) that calls it twice does not run the second command with the first one's store or level.
_SETTINGS_PREFIXES = ("EMONET_", "MLFLOW_")


def _settings_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_SETTINGS_PREFIXES)}


def _restore_settings_env(saved: dict[str, str]) -> None:
    for k in [k for k in os.environ if k.startswith(_SETTINGS_PREFIXES) and k not in saved]:
        del os.environ[k]
    os.environ.update(saved)


if __name__ == "__main__":
    sys.exit(main())
