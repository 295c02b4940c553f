"""Reading a run's per-utterance predictions: from its run directory or from its MLflow artifacts.

A prediction CSV (``emonet_dist.runs.predictions.write_predictions``) has the columns
``id, corpus, label, prediction, prob_<class>...``: one row per test utterance, labels as class names, and the
``prob_`` columns in the model's class order (which is where the class list comes from).

A run reference is, in this order: a run directory (holding ``run.json``), a run name under ``output_dir``,
or an MLflow run id (``runs:/<id>`` or the bare 32-hex id), whose ``predictions/<checkpoint>/`` artifacts are
downloaded with ``mlflow.artifacts.download_artifacts``.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import tracking
from ..errors import EmonetError
from ..runs.store import local_run, read_run_json
from ..tracking_http import http_limits, probe_tracking_server

CHECKPOINTS = ("best", "final")
_RUN_ID = re.compile(r"^(?:runs:/)?([0-9a-f]{32})/?$")


@dataclass(frozen=True)
class Predictions:
    """One corpus's test predictions of one run (N utterances)."""

    corpus: str
    classes: tuple[str, ...]
    """The model's classes, in output order (C of them)."""
    ids: tuple[str, ...]
    labels: tuple[str, ...]
    """True class names, length N."""
    predictions: tuple[str, ...]
    """Predicted class names, length N."""
    source: str = ""
    """Where the rows were read from (for messages)."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def correct(self) -> list[bool]:
        return [t == p for t, p in zip(self.labels, self.predictions)]


@dataclass
class RunPredictions:
    """Every corpus's predictions of one run at one checkpoint, with where they came from."""

    ref: str
    name: str
    checkpoint: str
    source: str
    """``"directory"`` or ``"mlflow"``."""
    run_dir: str | None = None
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    corpora: dict[str, Predictions] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        """The MLflow run id when known, else the run name (what report tags link to)."""
        return self.mlflow_run_id or self.name

    def describe(self) -> dict:
        return {"ref": self.ref, "name": self.name, "checkpoint": self.checkpoint, "source": self.source,
                "run_dir": self.run_dir, "mlflow_run_id": self.mlflow_run_id, "tracking_uri": self.tracking_uri,
                "corpora": sorted(self.corpora)}


def read_predictions(path: str | Path) -> Predictions:
    """Parse one prediction CSV; refuses missing columns, duplicate ids and labels outside the class list."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("id", "label", "prediction") if c not in header]
        if missing:
            raise EmonetError(f"{path} is not a prediction CSV: missing column(s) {missing} "
                              "(expected id, corpus, label, prediction, prob_<class>...)")
        rows = list(reader)
    classes = tuple(h[len("prob_"):] for h in header if h.startswith("prob_"))
    ids = tuple(r["id"] for r in rows)
    labels = tuple(r["label"] for r in rows)
    preds = tuple(r["prediction"] for r in rows)
    corpora = {r["corpus"] for r in rows if r.get("corpus")}
    if len(corpora) > 1:
        raise EmonetError(f"{path} mixes corpora {sorted(corpora)}; one CSV holds one corpus")
    corpus = corpora.pop() if corpora else path.stem
    if not classes:  # an older or hand-written CSV: the classes seen are all we know
        classes = tuple(sorted(set(labels) | set(preds)))
    unknown = sorted((set(labels) | set(preds)) - set(classes))
    if unknown:
        raise EmonetError(f"{path}: label(s) {unknown} are not among the prob_ columns {list(classes)}")
    if len(set(ids)) != len(ids):
        raise EmonetError(f"{path}: {len(ids) - len(set(ids))} duplicate utterance id(s); each test utterance "
                          "must appear once")
    return Predictions(corpus, classes, ids, labels, preds, str(path))


def read_prediction_dir(directory: str | Path) -> dict[str, Predictions]:
    """``{corpus: Predictions}`` for every ``*.csv`` in a ``predictions/<checkpoint>/`` directory."""
    out: dict[str, Predictions] = {}
    for path in sorted(Path(directory).glob("*.csv")):
        p = read_predictions(path)
        if p.corpus in out:
            raise EmonetError(f"{directory}: corpus {p.corpus} appears in two CSVs")
        out[p.corpus] = p
    return out


def load_run(ref: str | Path, checkpoint: str = "best", output_dir: str | Path = "runs",
             tracking_uri: str | None = None) -> RunPredictions:
    """A run's predictions from a run directory, a run name under ``output_dir``, or an MLflow run id.

    ``tracking_uri`` is needed for MLflow run ids (default: ``$MLFLOW_TRACKING_URI``).
    """
    if checkpoint not in CHECKPOINTS:
        raise EmonetError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    ref = str(ref)
    run_dir = local_run(ref, output_dir)
    if run_dir is not None:
        return _from_directory(ref, run_dir, checkpoint)
    m = _RUN_ID.match(ref)
    if m:
        return _from_mlflow(ref, m.group(1), checkpoint, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    raise EmonetError(f"no run '{ref}': not a run directory ({ref}/run.json), not a run name under {output_dir}, "
                      "and not an MLflow run id (32 hex digits or runs:/ID)")


def load_column(ref: str | Path, checkpoint: str = "best", output_dir: str | Path = "runs",
                tracking_uri: str | None = None) -> RunPredictions:
    """One report column: a run reference as :func:`load_run` takes it, optionally ``@best`` / ``@final`` (this
    run's checkpoint instead of ``checkpoint``), or several such references joined by commas, whose corpora are
    merged into one column (per-corpus runs, e.g. a scratch run or an adapter transfer per corpus).

    A corpus in two of the merged runs is refused: the column would be ambiguous.
    """
    text = str(ref)
    parts = [p.strip() for p in text.split(",")] if "," in text and not Path(text).exists() else [text]
    runs = []
    for part in parts:
        base, _, ck = part.rpartition("@")
        suffixed = base and ck in CHECKPOINTS and not Path(part).exists()  # RUN@best / RUN@final
        runs.append(load_run(base, ck, output_dir, tracking_uri) if suffixed
                    else load_run(part, checkpoint, output_dir, tracking_uri))
    if len(runs) == 1:
        r = runs[0]
        return r if text == r.ref else RunPredictions(text, f"{r.name}@{r.checkpoint}", r.checkpoint, r.source,
                                                      r.run_dir, r.mlflow_run_id, r.tracking_uri, r.corpora)
    corpora: dict[str, Predictions] = {}
    for r in runs:
        for c, pred in r.corpora.items():
            if c in corpora:
                owner = next(o.name for o in runs if c in o.corpora)
                raise EmonetError(f"corpus {c} is in both {owner} and {r.name}: a merged report column takes each "
                                  f"corpus from one run (drop one of them from '{text}')")
            corpora[c] = pred
    checkpoints = sorted({r.checkpoint for r in runs})
    return RunPredictions(text, "+".join(r.name for r in runs), "+".join(checkpoints), "merged", None,
                          "+".join(r.run_id for r in runs), runs[0].tracking_uri, corpora)


def _from_directory(ref: str, run_dir: Path, checkpoint: str) -> RunPredictions:
    info = read_run_json(run_dir)
    pred_dir = run_dir / "predictions" / checkpoint
    corpora = read_prediction_dir(pred_dir) if pred_dir.is_dir() else {}
    if not corpora:
        other = [c for c in CHECKPOINTS if c != checkpoint and any((run_dir / "predictions" / c).glob("*.csv"))]
        hint = f"; it has {other[0]} predictions (--checkpoint {other[0]})" if other else \
            " (did the run finish? its status is " + str(info.get("status")) + ")"
        raise EmonetError(f"run {run_dir} has no prediction CSVs in predictions/{checkpoint}/{hint}")
    return RunPredictions(ref, info.get("name") or run_dir.name, checkpoint, "directory", str(run_dir),
                          info.get("mlflow_run_id"), info.get("tracking_uri"), corpora)


def _from_mlflow(ref: str, run_id: str, checkpoint: str, tracking_uri: str | None) -> RunPredictions:
    import mlflow

    if not tracking_uri:
        raise EmonetError(f"'{ref}' looks like an MLflow run id, but no tracking URI is known: pass "
                          "--tracking-uri or set MLFLOW_TRACKING_URI")
    probe_tracking_server(tracking_uri)  # an unreachable server fails in seconds
    try:
        run = tracking.client(tracking_uri).get_run(run_id)  # bounded HTTP timeout and retries
    except Exception as exc:  # noqa: BLE001 - RestException, store errors
        raise EmonetError(f"cannot read MLflow run {run_id} at {tracking_uri}: {' '.join(str(exc).split())[:300]}"
                          ) from None
    tmp = tempfile.mkdtemp(prefix="emonet-report-")
    try:
        try:
            with http_limits():
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"predictions/{checkpoint}",
                                                            tracking_uri=tracking_uri, dst_path=tmp)
        except Exception as exc:  # noqa: BLE001 - missing artifact paths raise store-specific errors
            raise EmonetError(f"MLflow run {run_id} has no predictions/{checkpoint}/ artifacts "
                              f"({' '.join(str(exc).split())[:200]})") from None
        corpora = read_prediction_dir(local)  # read into memory, so the download can go
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not corpora:
        raise EmonetError(f"MLflow run {run_id} has no prediction CSVs under predictions/{checkpoint}/")
    return RunPredictions(ref, run.info.run_name or run_id, checkpoint, "mlflow", None, run_id, tracking_uri,
                          corpora)
