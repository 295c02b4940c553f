"""Learning curves of a grid experiment, from its MLflow runs: dev UAR after every epoch (single-corpus runs:
scratch and adapter transfers), mean and spread over the grid's folds and seeds, per corpus and method.

    python docs/results/learning_curves.py runs/realdata-grid/mlflow.db --job realdata_grid \\
        --out docs/results/learning_curves.png

Prints a table (mean dev UAR per epoch, and how many runs had their best dev epoch at the last one, i.e. were
still improving when the epoch cap stopped them) and writes the figure.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from emonet_dist.errors import EmonetError
from emonet_dist.names import check_name


def curves(db: Path, job: str) -> dict[tuple[str, str], list[list[float]]]:
    """(method, corpus) -> one dev-UAR-per-epoch list per single-corpus run of the job's grid. Raises
    :class:`EmonetError` when ``db`` is not a file or ``job`` is not a valid job name (it enters an MLflow filter)."""
    check_name(job, "--job")
    if not db.is_file():
        raise EmonetError(f"no MLflow database at {str(db)[:120]}: give the grid job's mlflow.db "
                          "(under its output_dir)")
    client = MlflowClient(tracking_uri=f"sqlite:///{db.resolve()}")
    out: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    for exp in client.search_experiments():
        runs = client.search_runs([exp.experiment_id], f"tags.emonet_job = '{job}' and tags.job_step = 'grid'",
                                  max_results=5000)
        for run in runs:
            dev = [k for k in run.data.metrics if k.startswith("dev_uar/")]
            if len(dev) != 1 or run.info.status != "FINISHED":
                continue  # multi-corpus pretraining (a step is not an epoch) or an unfinished run
            hist = sorted(client.get_metric_history(run.info.run_id, dev[0]), key=lambda m: m.step)
            out[(run.data.tags["grid_method"], dev[0].split("/", 1)[1])].append([m.value for m in hist])
    return dict(out)


def table(data: dict[tuple[str, str], list[list[float]]]) -> str:
    width = max(len(c) for runs in data.values() for c in runs)
    head = "| corpus | method | runs | " + " | ".join(f"ep {i + 1}" for i in range(width)) + " | best at last epoch |"
    lines = [head, "|" + "---|" * (width + 4)]
    for (method, corpus), runs in sorted(data.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = []
        for i in range(width):
            vals = [r[i] for r in runs if len(r) > i]
            cells.append(f"{100 * np.mean(vals):.1f}" if vals else "")
        last = sum(1 for r in runs if r and int(np.argmax(r)) == len(r) - 1)
        lines.append(f"| {corpus} | {method} | {len(runs)} | " + " | ".join(cells) + f" | {last}/{len(runs)} |")
    return "\n".join(lines)


def plot(data: dict[tuple[str, str], list[list[float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = sorted({c for _, c in data})
    fig, axes = plt.subplots(1, len(corpora), figsize=(4.2 * len(corpora), 3.4), squeeze=False)
    for ax, corpus in zip(axes[0], corpora):
        for (method, c), runs in sorted(data.items()):
            if c != corpus:
                continue
            width = max(len(r) for r in runs)
            mean = [np.mean([r[i] for r in runs if len(r) > i]) for i in range(width)]
            std = [np.std([r[i] for r in runs if len(r) > i]) for i in range(width)]
            x = np.arange(1, width + 1)
            ax.plot(x, 100 * np.array(mean), marker="o", label=f"{method} ({len(runs)} runs)")
            ax.fill_between(x, 100 * (np.array(mean) - std), 100 * (np.array(mean) + std), alpha=0.15)
        ax.set_title(corpus)
        ax.set_xlabel("epoch")
        ax.set_ylabel("dev UAR % (mean ± std over folds x seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("db", type=Path, help="the grid job's MLflow database (sqlite)")
    ap.add_argument("--job", required=True, help="the job's name (tag emonet_job)")
    ap.add_argument("--out", type=Path, default=Path("learning_curves.png"))
    args = ap.parse_args(argv)
    try:
        data = curves(args.db, args.job)
    except EmonetError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not data:
        raise SystemExit(f"no finished single-corpus grid runs of job {args.job[:40]!r} in {args.db}")
    print(table(data))
    plot(data, args.out)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
