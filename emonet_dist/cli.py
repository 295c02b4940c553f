"""``emonet``: the command line. Each subcommand builds the typed config and calls into the packages.

Every command takes ``--config FILE.yaml`` and trailing ``section.key=value`` overrides; its own flags are
shorthands for keys of the same tree (``--seed 3`` on ``corpus prepare`` is ``prepare.seed=3``), so what a
command ran with can always be written back as one YAML.

Errors the user can fix are printed as one line (``error: ...``) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_parser import Parser
from .config import Config, load_config
from .errors import EmonetError
from .names import check_name


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.yaml", help="config file (defaults apply to missing keys)")
    p.epilog = "Any number of KEY=VALUE config overrides may follow, e.g. prepare.seed=3 data.batch_size=16."


def _cfg(args, flags: dict[str, object]) -> Config:
    """Config from --config, then flag values (when given), then KEY=VALUE overrides (last wins)."""
    overrides = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in flags.items() if v is not None]
    return load_config(getattr(args, "config", None), overrides + list(args.overrides))


# ---------------------------------------------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------------------------------------------
def cmd_corpus_prepare(args) -> int:
    from .corpora.prepare import prepare_corpus

    cfg = _cfg(args, {"prepare.seed": args.seed, "prepare.split": args.split, "prepare.num_folds": args.folds,
                      "prepare.dev_fraction": args.dev_fraction, "prepare.test_fraction": args.test_fraction,
                      "prepare.allow_speaker_overlap": True if args.allow_speaker_overlap else None,
                      "prepare.check_audio": args.check, "prepare.jobs": args.jobs})
    name = args.name if args.name is None else check_name(args.name, "--name")  # it names directories
    report = prepare_corpus(args.recipe, args.raw_dir, args.out, cfg.prepare, name=name)
    _print_report(report, Path(args.out))
    return 0


def _print_report(report: dict, out: Path) -> None:
    print(f"{report['corpus']}: {report['utterances']} utterances, {report['speakers']} speakers, "
          f"{len(report['classes'])} classes, {report['duration_s']['total'] / 3600:.2f} h ({report['split']} split)")
    for part, n in report["per_partition"].items():
        spk = len(report["speakers_per_partition"][part])
        print(f"  {part:>10}: {n:6d} utterances, {spk:4d} speakers")
    print(f"  classes: {', '.join(f'{k} {v}' for k, v in report['per_class'].items())}")
    if report["skipped_count"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in report["skipped_by_reason"].items())
        print(f"  skipped {report['skipped_count']} file(s) ({reasons}); each is listed in {out / 'report.json'}")
    print(f"  wrote {out / 'manifest.jsonl'} and {out / 'report.json'}")


def cmd_corpus_synth(args) -> int:
    from .corpora.synth import build_synthetic

    cfg = _cfg(args, {"prepare.seed": args.seed, "prepare.jobs": args.jobs})
    reports = build_synthetic(Path(args.out), seed=cfg.prepare.seed, cfg=cfg.prepare, names=args.names or None,
                              jobs=cfg.prepare.jobs)
    for name, report in reports.items():
        _print_report(report, Path(args.out) / name)
    print(f"next: emonet shard {' '.join(str(Path(args.out) / n) for n in reports)} --out SHARD_DIR")
    return 0


def cmd_corpus_partition(args) -> int:
    from .corpora.repartition import partition_manifest

    cfg = _cfg(args, {"prepare.seed": args.seed, "prepare.split": args.split, "prepare.num_folds": args.folds,
                      "prepare.allow_speaker_overlap": True if args.allow_speaker_overlap else None})
    report = partition_manifest(args.manifest, args.out, cfg.prepare)
    print(f"{report['utterances']} utterances, {report['speakers']} speakers -> "
          f"{', '.join(f'{p} {n}' for p, n in report['per_partition'].items())} ({report['seconds']} s); "
          f"wrote {Path(args.out) / 'manifest.jsonl'}")
    return 0


def cmd_corpus_check(args) -> int:
    from .corpora.manifest import check_speaker_disjoint, read_manifest, summarize

    rows = read_manifest(Path(args.corpus_dir))
    check_speaker_disjoint(rows, allow_overlap=args.allow_speaker_overlap, where=str(args.corpus_dir))
    s = summarize(rows)
    print(json.dumps({k: s[k] for k in ("utterances", "speakers", "classes", "per_partition", "duration_s")}, indent=1))
    return 0


def cmd_corpus_recipes(args) -> int:
    from .corpora.recipes import get_recipe, recipe_names

    for name in recipe_names():
        print(f"{name:10s} {get_recipe(name).LAYOUT}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------------------------
def cmd_shard(args) -> int:
    from .data.shards import shard_corpora, verify

    if args.paths and args.paths[0] == "verify":
        if len(args.paths) != 2:
            raise EmonetError("usage: emonet shard verify SHARD_DIR [--quick]")
        checked, problems = verify(args.paths[1], quick=args.quick)
        for p in problems:
            print(f"FAIL {p}")
        print(f"{checked} shard(s) checked, {len(problems)} problem(s)")
        return 1 if problems else 0
    if not args.out:
        raise EmonetError("emonet shard needs --out SHARD_DIR (or `emonet shard verify SHARD_DIR`)")
    cfg = _cfg(args, {"shard.samples_per_shard": args.samples_per_shard, "shard.jobs": args.jobs})
    for index in shard_corpora(args.paths, args.out, cfg.shard, force=args.force):
        parts = ", ".join(f"{p} {v['utterances']} in {len(v['shards'])} shard(s)"
                          for p, v in index["partitions"].items())
        print(f"{index['corpus']}: {parts}")
    return 0


def cmd_train(args) -> int:
    from .train.launch import run_training

    if not args.config and not args.resume:
        raise EmonetError("emonet train needs a CONFIG.yaml (see jobs/) or --resume RUN")
    cfg = load_config(args.config, list(args.overrides) + ([f"ray.address={args.address}"] if args.address else []))
    result = run_training(cfg, resume=args.resume)
    print(f"run {result.name} finished: {result.dir}")
    for k, v in sorted(result.metrics.items()):
        if isinstance(v, float):
            print(f"  {k:40s} {v:.4f}")
    if result.mlflow_run_id:
        print(f"  mlflow run {result.mlflow_run_id} at {result.tracking_uri}")
    return 0


def cmd_transfer(args) -> int:
    from .train.launch import run_training
    from .train.transfer import transfer_config

    cfg = transfer_config(args.source, args.corpus, args.mode, list(args.overrides), task=args.task)
    result = run_training(cfg)
    print(f"transfer run {result.name} ({args.mode} -> {args.corpus}) finished: {result.dir}")
    for k, v in sorted(result.metrics.items()):
        if isinstance(v, float):
            print(f"  {k:40s} {v:.4f}")
    return 0


def cmd_tune(args) -> int:
    from .tuning import load_space, print_table, run_sweep

    if args.resume:
        summary = run_sweep(load_config(None), {}, resume=args.resume)
    else:
        if not args.config or not args.space:
            raise EmonetError("emonet tune needs CONFIG.yaml and --space SPACE.yaml (or --resume SWEEP_DIR)")
        flags = {"tune.num_samples": args.num_samples, "tune.scheduler": args.scheduler, "tune.search": args.search,
                 "tune.max_concurrent": args.max_concurrent, "tune.objective": args.objective}
        cfg = _cfg(args, flags)
        summary = run_sweep(cfg, load_space(args.space))
    print_table(summary)
    print(f"sweep directory: {summary['sweep_dir']} (results.csv, objective.png, best_config.yaml)")
    return 0


def cmd_baseline_egemaps(args) -> int:
    from .baselines.egemaps import EgemapsConfig, run_egemaps_baseline

    cfg = _cfg(args, {"output_dir": args.out})
    bcfg = EgemapsConfig(jobs=args.jobs or 0, cache_dir=args.cache_dir or "")
    name = args.name if args.name is None else check_name(args.name, "--name")  # the run directory's name
    result = run_egemaps_baseline(args.corpus_dirs, cfg, bcfg, run_name=name)
    print(f"run {result.name} finished: {result.dir}")
    for k, v in sorted(result.metrics.items()):
        if k.startswith(("test_uar_final/", "dev_uar_best/", "chosen_c/")):
            print(f"  {k:40s} {v:.4g}")
    if result.mlflow_run_id:
        print(f"  mlflow run {result.mlflow_run_id} at {result.tracking_uri}")
    return 0


def cmd_bundle_export(args) -> int:
    from .bundles import export_bundle
    from .runs import find_run

    run_dir = find_run(args.run, args.output_dir)
    out = export_bundle(run_dir, args.corpus, args.out, args.checkpoint)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"exported bundle of {args.corpus} ({args.checkpoint}) to {out} ({size:.2f} MB)")
    return 0


def cmd_bundle_register(args) -> int:
    import json as _json

    from .bundles import read_bundle_meta, register_bundle

    meta = read_bundle_meta(args.bundle)
    uri = args.tracking_uri or meta.get("tracking_uri")
    if not uri:
        raise EmonetError("no tracking URI: pass --tracking-uri (the bundle does not record one)")
    version = register_bundle(args.bundle, args.name, uri, args.run_id)
    print(_json.dumps({"name": args.name, "version": version, "uri": f"models:/{args.name}/{version}",
                       "tracking_uri": uri}))
    return 0


def cmd_predict(args) -> int:
    import os

    from .bundles import load_bundle, open_bundle
    from .predict import chunk_samples, expand_inputs, predict_files

    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    with open_bundle(args.bundle) as bundle:  # a downloaded bundle is removed once loaded
        model, corpus, meta = load_bundle(bundle, args.backbone, device=args.device)
    chunk_samples(args.chunk_seconds, meta["frontend"]["sample_rate"], meta["frontend"]["n_fft"])
    files, failed = expand_inputs(args.inputs)
    if not files:
        why = f" ({failed[0][0][:60]}: {failed[0][1]})" if failed else ""
        raise EmonetError(f"no audio files to predict in {len(args.inputs)} input(s){why}; pass audio files or "
                          "directories holding them (.wav, .flac, ...)")
    results, unreadable = predict_files(model, corpus, meta, files, args.chunk_seconds, args.device)
    failed += unreadable
    _print_predictions(args.format, results, failed, meta["classes"], order=[str(f) for f in files])
    for path, reason in failed:
        print(f"error: {path}: {reason}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} file(s) could not be read; {len(results)} predicted", file=sys.stderr)
        return 1
    return 0


def _print_predictions(fmt: str, results: list[dict], failed: list[tuple[str, str]], classes: list[str],
                       order: list[str]) -> None:
    """Every file in input order (missing inputs first): its prediction, or its reason (JSON ``error`` key, CSV
    ``error`` column, table ``(error)`` row)."""
    import csv as _csv

    pos = {f: i for i, f in reversed(list(enumerate(order)))}
    rows = sorted(results + [{"file": f, "error": r} for f, r in failed], key=lambda r: pos.get(r["file"], -1))
    av_cols = [k for k in ("arousal", "valence") if results and k in results[0]]
    if fmt == "json":
        print(json.dumps(rows, indent=1))
    elif fmt == "csv":
        w = _csv.writer(sys.stdout)
        w.writerow(["file", "label", "confidence", *[f"prob_{c}" for c in classes], *av_cols, "error"])
        for r in rows:
            if "error" in r:
                w.writerow([r["file"], "", "", *[""] * len(classes), *[""] * len(av_cols), r["error"]])
            else:
                w.writerow([r["file"], r["label"], f"{r['confidence']:.4f}", *[f"{r['probs'][c]:.6f}" for c in classes],
                            *[r[k] for k in av_cols], ""])
    else:
        width = max([len(r["file"]) for r in rows] + [4])
        print(f"{'file':{width}s}  {'label':12s} confidence" + "".join(f"  {k:9s}" for k in av_cols))
        for r in rows:
            if "error" in r:
                print(f"{r['file']:{width}s}  {'(error)':12s} {r['error'][:60]}")
            else:
                print(f"{r['file']:{width}s}  {r['label']:12s} {r['confidence']:10.3f}" +
                      "".join(f"  {r[k]:9s}" for k in av_cols))


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 (nan, inf, 0 and negatives are refused in one line)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:20]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text[:20]!r}")
    return value


def cmd_report(args) -> int:
    import time

    from .evaluate.report import build_report, log_report_run
    from .evaluate.report_format import format_table

    labels = dict(x.split("=", 1) for x in args.label if "=" in x)
    out = Path(args.out or Path(args.output_dir) / "reports" / f"report-{time.strftime('%Y%m%d-%H%M%S')}")
    report = build_report(args.baseline, args.candidate, out, alpha=args.alpha, checkpoint=args.checkpoint,
                          labels=labels, output_dir=args.output_dir, tracking_uri=args.tracking_uri)
    print(format_table(report))
    print(f"wrote {out}/ (report.md, report.html, report.json, report.csv, uar_delta.png)")
    uri = args.tracking_uri or report["baseline"].get("tracking_uri")
    if uri and not args.no_track:
        print(f"MLflow report run {log_report_run(report, uri, args.experiment, out)} at {uri}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate.confusion import evaluate, format_scores
    from .evaluate.run_eval import evaluate_run

    if bool(args.run) == bool(args.predictions):
        raise EmonetError("emonet evaluate needs either --run RUN (scores the model on its shards) or "
                          "--predictions CSV_OR_RUN (scores existing prediction CSVs)")
    if args.run:
        out = args.out
        scores = evaluate_run(args.run, args.split, args.checkpoint, out, args.output_dir, args.device)
    else:
        if not args.out:
            raise EmonetError("--predictions needs --out DIR")
        out = args.out
        scores = evaluate(args.predictions, out, args.checkpoint, args.output_dir, args.tracking_uri)
    print(format_scores(scores))
    print(f"wrote {out or 'the run directory (eval/<split>-<checkpoint>/)'}: scores.json, scores.csv, "
          "<corpus>.confusion.csv and .png")
    return 0


def cmd_track_sync(args) -> int:
    from .runs import find_run, sync_run
    from .runs.store import read_run_json

    run_dir = find_run(args.run, args.output_dir)
    info = read_run_json(run_dir)
    n = sync_run(run_dir, info, args.tracking_uri)
    print(f"replayed {n} metric entries and the artifacts of {run_dir.name} into MLflow run {info['mlflow_run_id']}")
    return 0


def cmd_model_summary(args) -> int:
    from .model.summary import summarize

    cfg = _cfg(args, {})
    text, _ = summarize(cfg.model, corpora=args.corpora, num_classes=args.classes, seconds=args.seconds)
    print(text)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), list(args.overrides))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------------------
def cmd_config_show(args) -> int:
    print(_cfg(args, {}).to_yaml(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="emonet", description="Distributed multi-corpus speech emotion recognition (EmoNet).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    corpus = sub.add_parser("corpus", help="prepare corpora: recipes, synthetic corpora, checks")
    csub = corpus.add_subparsers(dest="corpus_command", required=True, parser_class=Parser)
    prep = csub.add_parser("prepare", help="parse a raw corpus into manifest.jsonl + report.json")
    prep.add_argument("recipe", help="recipe name (see `emonet corpus recipes`)")
    prep.add_argument("raw_dir", metavar="RAW_DIR", help="raw corpus root in its official layout (a CSV for `csv`)")
    prep.add_argument("--out", required=True, metavar="CORPUS_DIR")
    prep.add_argument("--name", help="corpus name (default: the recipe name)")
    prep.add_argument("--split", choices=["auto", "speaker", "folds", "official"])
    prep.add_argument("--folds", type=int, help="number of folds for --split folds (0: one per speaker group)")
    prep.add_argument("--seed", type=int)
    prep.add_argument("--dev-fraction", type=float)
    prep.add_argument("--test-fraction", type=float)
    prep.add_argument("--allow-speaker-overlap", action="store_true",
                      help="accept partitions that share speakers (scores are then not speaker-independent)")
    prep.add_argument("--check", choices=["decode", "header"], help="decode every file (default) or read headers")
    prep.add_argument("--jobs", type=int, help="worker processes (0: all cores)")
    _common(prep)
    prep.set_defaults(func=cmd_corpus_prepare)

    synth = csub.add_parser("synth", help="build the built-in synthetic corpora (demo and test data)")
    synth.add_argument("--out", required=True, metavar="DIR")
    synth.add_argument("--seed", type=int)
    synth.add_argument("--names", nargs="*", help="build only these corpora")
    synth.add_argument("--jobs", type=int)
    _common(synth)
    synth.set_defaults(func=cmd_corpus_synth)

    part = csub.add_parser("partition", help="re-partition an existing manifest (streams it; no audio is read)")
    part.add_argument("manifest", metavar="MANIFEST", help="manifest.jsonl or a corpus directory holding one")
    part.add_argument("--out", required=True, metavar="CORPUS_DIR")
    part.add_argument("--split", choices=["speaker", "folds", "official"])
    part.add_argument("--folds", type=int)
    part.add_argument("--seed", type=int)
    part.add_argument("--allow-speaker-overlap", action="store_true")
    _common(part)
    part.set_defaults(func=cmd_corpus_partition)

    check = csub.add_parser("check", help="validate a prepared corpus (speaker-disjoint partitions) and summarise it")
    check.add_argument("corpus_dir", metavar="CORPUS_DIR")
    check.add_argument("--allow-speaker-overlap", action="store_true")
    check.set_defaults(func=cmd_corpus_check)

    rec = csub.add_parser("recipes", help="list the corpus recipes and the layouts they expect")
    rec.set_defaults(func=cmd_corpus_recipes)

    shard = sub.add_parser("shard", help="write WebDataset shards (or `emonet shard verify SHARD_DIR`)")
    shard.add_argument("paths", nargs="+", metavar="CORPUS_DIR", help="prepared corpus directories")
    shard.add_argument("--out", metavar="SHARD_DIR")
    shard.add_argument("--samples-per-shard", type=int)
    shard.add_argument("--jobs", type=int)
    shard.add_argument("--force", action="store_true", help="rewrite these corpora's shards from scratch")
    shard.add_argument("--quick", action="store_true", help="with `verify`: check sizes and sha256 only (no decoding)")
    _common(shard)
    shard.set_defaults(func=cmd_shard)

    model = sub.add_parser("model", help="inspect the model")
    msub = model.add_subparsers(dest="model_command", required=True, parser_class=Parser)
    summ = msub.add_parser("summary", help="shared vs per-corpus parameters, FLOPs per second of audio, shapes")
    summ.add_argument("--corpora", type=int, default=1, help="number of corpora in the model (default 1)")
    summ.add_argument("--classes", type=int, default=4, help="classes per corpus (default 4)")
    summ.add_argument("--seconds", type=float, default=3.0, help="input length for the shape trace (default 3 s)")
    _common(summ)
    summ.set_defaults(func=cmd_model_summary)

    train = sub.add_parser("train", help="train on Ray (multi-corpus round-robin or single corpus)")
    train.add_argument("config", nargs="?", metavar="CONFIG.yaml")
    train.add_argument("--resume", metavar="RUN", help="continue a stopped run (its directory or name)")
    train.add_argument("--address", help="join a running Ray cluster (default: start Ray locally)")
    train.epilog = "Any number of KEY=VALUE config overrides may follow, e.g. optim.lr=0.01 ray.num_workers=4."
    train.set_defaults(func=cmd_train)

    tr = sub.add_parser("transfer", help="train a new corpus on top of a pretrained run (single-corpus schedule)")
    tr.add_argument("--from", dest="source", required=True, metavar="RUN_OR_CHECKPOINT",
                    help="a finished run directory (or name under output_dir), or a model directory")
    tr.add_argument("--corpus", required=True, help="corpus name in the shard directory")
    tr.add_argument("--mode", required=True, choices=["adapters", "head", "finetune", "scratch", "zero-shared"])
    tr.add_argument("--task", default="emotion", choices=["emotion", "arousal", "valence", "speaker"])
    tr.epilog = "Any number of KEY=VALUE overrides may follow, e.g. train.patience=10 data.shards=/data/shards."
    tr.set_defaults(func=cmd_transfer)

    tune = sub.add_parser("tune", help="Ray Tune sweep over config keys (learning rate, lambda, ...)")
    tune.add_argument("config", nargs="?", metavar="CONFIG.yaml")
    tune.add_argument("--space", metavar="SPACE.yaml", help="dotted config keys -> distributions (jobs/spaces/)")
    tune.add_argument("--num-samples", type=int)
    tune.add_argument("--scheduler", choices=["asha", "none"])
    tune.add_argument("--search", choices=["random", "optuna"])
    tune.add_argument("--max-concurrent", type=int)
    tune.add_argument("--objective", help="'mean' (mean dev UAR) or a corpus name")
    tune.add_argument("--resume", metavar="SWEEP_DIR", help="continue an interrupted sweep")
    tune.epilog = "Any number of KEY=VALUE config overrides may follow."
    tune.set_defaults(func=cmd_tune)

    base = sub.add_parser("baseline", help="non-neural reference systems, recorded as runs `emonet report` reads")
    basesub = base.add_subparsers(dest="baseline_command", required=True, parser_class=Parser)
    bego = basesub.add_parser("egemaps", help="eGeMAPS functionals + linear SVM per corpus (C chosen on dev)")
    bego.add_argument("corpus_dirs", nargs="+", metavar="CORPUS_DIR", help="prepared corpus directories")
    bego.add_argument("--out", metavar="DIR", help="output_dir: runs, mlflow.db and the feature cache (default: runs)")
    bego.add_argument("--name", help="run name (default: egemaps-svm-<date>-<time>-<hex>)")
    bego.add_argument("--jobs", type=int, help="feature extraction processes (0: all cores)")
    bego.add_argument("--cache-dir", help="eGeMAPS feature cache (default: OUT/cache/egemaps)")
    _common(bego)
    bego.set_defaults(func=cmd_baseline_egemaps)

    bundle = sub.add_parser("bundle", help="adapter bundles: export from a run, register in MLflow")
    bsub = bundle.add_subparsers(dest="bundle_command", required=True, parser_class=Parser)
    bex = bsub.add_parser("export", help="write one corpus's bundle (adapters, BNs, head + backbone pointer)")
    bex.add_argument("--run", required=True, help="run directory or name")
    bex.add_argument("--corpus", required=True)
    bex.add_argument("--out", required=True, metavar="DIR")
    bex.add_argument("--checkpoint", choices=["best", "final"], default="final")
    bex.add_argument("--output-dir", default="runs", help="where run names are looked up (default: runs)")
    bex.set_defaults(func=cmd_bundle_export)
    breg = bsub.add_parser("register", help="register a bundle as a new version of an MLflow model")
    breg.add_argument("bundle", metavar="BUNDLE_DIR")
    breg.add_argument("--name", required=True, help="registered model name")
    breg.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the bundle's run used)")
    breg.add_argument("--run-id", help="MLflow run to attach the files to (default: the bundle's training run)")
    breg.set_defaults(func=cmd_bundle_register)

    pred = sub.add_parser("predict", help="label audio files with an adapter bundle")
    pred.add_argument("--bundle", required=True, help="bundle directory, runs:/RUN_ID/PATH or models:/NAME/VERSION")
    pred.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    pred.add_argument("--backbone", help="backbone directory (default: found from the bundle)")
    pred.add_argument("--format", choices=["table", "json", "csv"], default="table")
    pred.add_argument("--chunk-seconds", type=_seconds, default=10.0,
                      help="long files are cut into chunks (default 10; at least one STFT window)")
    pred.add_argument("--device", default="cpu")
    pred.add_argument("--tracking-uri", help="MLflow tracking URI for runs:/ and models:/ references")
    pred.set_defaults(func=cmd_predict)

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
    rep.set_defaults(func=cmd_report)

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
    ev.set_defaults(func=cmd_evaluate)

    track = sub.add_parser("track", help="MLflow housekeeping")
    tsub = track.add_subparsers(dest="track_command", required=True, parser_class=Parser)
    sync = tsub.add_parser("sync", help="replay a run's metric journal and artifacts after an MLflow outage")
    sync.add_argument("run", metavar="RUN", help="run directory or name")
    sync.add_argument("--tracking-uri", help="default: the URI the run was started with")
    sync.add_argument("--output-dir", default="runs")
    sync.set_defaults(func=cmd_track_sync)

    demo = sub.add_parser("demo", help="run the whole pipeline on the built-in synthetic corpora")
    demo.add_argument("--out", default="demo", help="output directory (default: ./demo)")
    demo.epilog = "KEY=VALUE overrides of jobs/demo.yaml may follow (they also apply to the transfer runs)."
    demo.set_defaults(func=cmd_demo)

    cfg = sub.add_parser("config", help="show the resolved config")
    csub2 = cfg.add_subparsers(dest="config_command", required=True, parser_class=Parser)
    show = csub2.add_parser("show", help="print the config after --config and overrides, as YAML")
    _common(show)
    show.set_defaults(func=cmd_config_show)
    __import__(f"{__package__}.submit", fromlist=["add_parsers"]).add_parsers(sub)  # `emonet submit`, `emonet jobs`
    return p


def _is_override(arg: str) -> bool:
    """``section.key=value`` or ``top_level_key=value`` for a key of the config tree (not a path or a label)."""
    import dataclasses
    import re

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
    try:
        return int(args.func(args) or 0)
    except EmonetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
