"""The run layer: one run's directory, ``run.json``, MLflow lifecycle, inputs and prediction files.

Training (``train.launch``), transfer, the baselines, evaluation, reports and Tune create and find runs through
here; nothing else writes ``run.json`` or starts an MLflow run.

    store        the directory, config files, ``run.json`` (atomic), names, finding a run by name, path or MLflow id
    tracked      the MLflow run: tags (source, commit, kind), params, dataset inputs, parent runs, finish, sync
    inputs       ``partitions.json`` and the corpora as MLflow dataset inputs (shard index sha256 as digest)
    predictions  ``predictions/<checkpoint>/<corpus>.csv``
    run          :class:`Run`: the above, start to end
"""

from .inputs import read_partitions
from .predictions import write_predictions
from .run import Run, RunResult
from .store import absolute_paths, find_run, new_run_name
from .tracked import PARENT_ENV, parent_run, sync_run

__all__ = ["PARENT_ENV", "Run", "RunResult", "absolute_paths", "find_run", "new_run_name", "parent_run",
           "read_partitions", "sync_run", "write_predictions"]
