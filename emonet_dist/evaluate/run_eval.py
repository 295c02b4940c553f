"""``emonet evaluate --run RUN``: score a finished run's model on a split of its shards.

For every corpus of the run, the model at the chosen checkpoint (``final``: the run's adapter bundle on its
backbone; ``best``: the corpus's best-dev model) predicts the whole ``dev`` or ``test`` partition from the
shards. Predictions, UAR/WA/per-class recall (computed with scikit-learn) and confusion matrices (CSV + PNG)
are written under ``<run>/eval/<split>-<checkpoint>/`` (or ``--out``) and logged to the run's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

from ..bundles import load_bundle
from ..errors import EmonetError
from ..model.weights import load_model
from ..runs import Run, write_predictions
from ..tracking import metric_key
from ..train.evaluation import predict
from ..train.streams import corpus_data, eval_stream
from .confusion import evaluate_predictions
from .predictions import read_predictions


def evaluate_run(ref: str, split: str = "test", checkpoint: str = "final", out: str | Path | None = None,
                 output_dir: str = "runs", device: str = "cpu") -> dict:
    """``{corpus: scores}`` for the run's model on ``split``; files written and logged to MLflow."""
    if split not in ("dev", "test") or checkpoint not in ("best", "final"):
        raise EmonetError("evaluate needs --split dev|test and --checkpoint best|final")
    run = Run.open(ref, output_dir)
    cfg, run_dir = run.cfg, run.dir
    out = Path(out) if out else run_dir / "eval" / f"{split}-{checkpoint}"
    preds = {}
    for spec in cfg.data.corpora:
        data = corpus_data(cfg.data.shards, spec, cfg.data.seed)
        stream = eval_stream(data, split, cfg.data, 0, 1)
        if stream is None:
            raise EmonetError(f"corpus '{data.name}' has no {split} partitions in the run's config")
        key = metric_key(data.name)
        if checkpoint == "final":
            model, name, _ = load_bundle(run_dir / "bundles" / key, device=device)
        else:
            if not (run_dir / "best" / key / "model.safetensors").is_file():
                raise EmonetError(f"run {run_dir.name} kept no best-dev model for '{data.name}'")
            model, name = load_model(run_dir / "best" / key, device=device).eval(), data.name
        pred = predict(model, stream, name, device)
        csv = out / "predictions" / f"{key}.csv"
        write_predictions(csv, pred, data.name, data.classes)
        preds[data.name] = read_predictions(csv)
    scores = evaluate_predictions(preds, out)
    log = run.logger(out / "metrics.jsonl")
    step = int(run.read_info().get("metrics", {}).get("step", 0))
    log.log_metrics({metric_key(f"eval_{split}_{checkpoint}_{m}", c): s[m] for c, s in scores.items()
                     for m in ("uar", "wa")}, step)
    log.log_artifact(out, f"eval/{split}-{checkpoint}")
    if log.error:
        raise EmonetError(f"evaluation files are in {out}, but {log.error}")
    return scores
