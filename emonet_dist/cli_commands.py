"""What each ``emonet`` command does once its arguments are parsed: build the typed config, call into the packages,
print the outcome. The parser is :mod:`emonet_dist.cli`; the job commands are in :mod:`emonet_dist.cli_jobs`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .config import Config, load_config
from .errors import EmonetError
from .names import check_name

CONFIG_DEST = "config:"
"""argparse ``dest`` prefix of the flags that set config keys (``--seed`` -> ``config:prepare.seed``)."""


def config_from_args(args) -> Config:
    """Config from --config, then the flags that set config keys (when given), then KEY=VALUE overrides (last
    wins). The flags' values are typed by argparse, so they are set with ``Config.replace``."""
    values = {k[len(CONFIG_DEST):]: v for k, v in vars(args).items() if k.startswith(CONFIG_DEST) and v is not None}
    return load_config(getattr(args, "config", None)).replace(values).override(*args.overrides)


# ---------------------------------------------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------------------------------------------
def cmd_corpus_prepare(args) -> int:
    from .corpora.prepare import prepare_corpus

    cfg = config_from_args(args)
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

    cfg = config_from_args(args)
    reports = build_synthetic(Path(args.out), seed=cfg.prepare.seed, cfg=cfg.prepare, names=args.names or None,
                              jobs=cfg.prepare.jobs)
    for name, report in reports.items():
        _print_report(report, Path(args.out) / name)
    print(f"next: emonet shard {' '.join(str(Path(args.out) / n) for n in reports)} --out SHARD_DIR")
    return 0


def cmd_corpus_partition(args) -> int:
    from .corpora.repartition import partition_manifest

    cfg = config_from_args(args)
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
    cfg = config_from_args(args)
    for index in shard_corpora(args.paths, args.out, cfg.shard, force=args.force):
        parts = ", ".join(f"{p} {v['utterances']} in {len(v['shards'])} shard(s)"
                          for p, v in index["partitions"].items())
        print(f"{index['corpus']}: {parts}")
    return 0


def cmd_train(args) -> int:
    from .train.launch import run_training

    if not args.config and not args.resume:
        raise EmonetError("emonet train needs a CONFIG.yaml (see jobs/) or --resume RUN")
    cfg = config_from_args(args)
    result = run_training(cfg, resume=args.resume)
    print(f"run {result.name} finished: {result.dir}")
    for k, v in sorted(result.metrics.items()):
        if isinstance(v, float):
            print(f"  {k:40s} {v:.4f}")
    if result.mlflow_run_id:
        print(f"  mlflow run {result.mlflow_run_id} at {result.tracking_uri}")
    _warn_tracking_incomplete(result)
    return 0


def _warn_tracking_incomplete(result) -> None:
    """The run finished, but its MLflow copy did not: say so last, with the command that completes it."""
    if result.tracking_error:
        print(f"warning: tracking incomplete: run {result.name} finished and everything is in {result.dir}, but its "
              f"MLflow run is incomplete ({result.tracking_error}); complete it with `emonet track sync {result.dir}` "
              "once the tracking server is reachable", file=sys.stderr)


def cmd_transfer(args) -> int:
    from .train.launch import run_training
    from .train.transfer import transfer_config

    cfg = transfer_config(args.source, args.corpus, args.mode, list(args.overrides), task=args.task)
    result = run_training(cfg)
    print(f"transfer run {result.name} ({args.mode} -> {args.corpus}) finished: {result.dir}")
    for k, v in sorted(result.metrics.items()):
        if isinstance(v, float):
            print(f"  {k:40s} {v:.4f}")
    _warn_tracking_incomplete(result)
    return 0


def cmd_tune(args) -> int:
    from .tuning import format_table, load_space, run_sweep

    if args.resume:
        summary = run_sweep(Config(), {}, resume=args.resume)
    else:
        if not args.config or not args.space:
            raise EmonetError("emonet tune needs CONFIG.yaml and --space SPACE.yaml (or --resume SWEEP_DIR)")
        cfg = config_from_args(args)
        summary = run_sweep(cfg, load_space(args.space))
    print(format_table(summary))
    print(f"sweep directory: {summary['sweep_dir']} (results.csv, objective.png, best_config.yaml)")
    return 0


def cmd_baseline_egemaps(args) -> int:
    from .baselines.egemaps import EgemapsConfig, run_egemaps_baseline

    cfg = config_from_args(args)
    bcfg = EgemapsConfig(jobs=args.jobs or 0, cache_dir=args.cache_dir or "")
    name = args.name if args.name is None else check_name(args.name, "--name")  # the run directory's name
    result = run_egemaps_baseline(args.corpus_dirs, cfg, bcfg, run_name=name)
    print(f"run {result.name} finished: {result.dir}")
    for k, v in sorted(result.metrics.items()):
        if k.startswith(("test_uar_final/", "dev_uar_best/", "chosen_c/")):
            print(f"  {k:40s} {v:.4g}")
    if result.mlflow_run_id:
        print(f"  mlflow run {result.mlflow_run_id} at {result.tracking_uri}")
    _warn_tracking_incomplete(result)
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
    entries, sent = sync_run(run_dir, info, args.tracking_uri)
    print(f"replayed {entries} metric entries ({sent} points were missing) and the artifacts of {run_dir.name} into "
          f"MLflow run {info['mlflow_run_id']}")
    return 0


def cmd_model_summary(args) -> int:
    from .model.summary import summarize

    cfg = config_from_args(args)
    text, _ = summarize(cfg.model, corpora=args.corpora, num_classes=args.classes, seconds=args.seconds)
    print(text)
    return 0


def cmd_config_show(args) -> int:
    print(config_from_args(args).to_yaml(), end="")
    return 0
