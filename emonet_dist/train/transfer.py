"""``emonet transfer``: train one corpus on top of a pretrained run (paper section 5.2.2).

The new run inherits the source run's model and data settings; its corpus gets new adapters, BNs and head,
and trains with the single-corpus schedule (LR drops on dev-UAR plateaus). Modes: ``adapters`` (shared
weights frozen), ``head`` (backbone frozen), ``finetune`` (everything, starting at LR 0.01) and ``scratch``
(the same architecture from random weights: the baseline).
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import EmonetError
from ..model.pretrained import resolve_init
from ..runs.store import find_run, read_config

MODES = ("adapters", "head", "finetune", "scratch", "zero-shared")


def transfer_config(source: str, corpus: str, mode: str, overrides: list[str] | tuple[str, ...] = (),
                    task: str = "emotion", output_dir: str | None = None) -> Config:
    """The config of a transfer run from a finished run directory (or a model directory plus overrides)."""
    if mode not in MODES:
        raise EmonetError(f"unknown transfer mode '{mode}'; use one of {', '.join(MODES)}")
    try:
        run_dir = find_run(source, output_dir or "runs")
        base = read_config(run_dir)
        init = str(resolve_init(str(run_dir)))
    except EmonetError:
        init = str(resolve_init(source))  # a bare model directory: the rest comes from overrides
        base = Config()
    values = {"name": f"{base.name}-{mode}-{corpus}", "data.corpora": [{"name": corpus, "task": task}],
              "train.schedule": "single", "train.mode": mode, "train.init_from": "" if mode == "scratch" else init}
    if output_dir:
        values["output_dir"] = str(Path(output_dir))
    return base.replace(values).override(*overrides)
