"""One Ray Train worker's fixed setup for a run: steps [1] to [3] of the loop (:mod:`emonet_dist.train.loop`).

:class:`Worker` holds what does not change between steps: the config, the rank and device, the data, the model
and its optimiser. The tensors behind the model and optimiser change as training goes; everything else that
changes, and must survive a restart, is in :class:`~emonet_dist.train.state.TrainState`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config
from ..data.remote import UrlPolicy
from ..model.build import EmoNet
from ..model.modes import set_mode
from ..model.pretrained import build_model_for_run
from ..tracking import RunLogger
from .buckets import GradientBuckets, gradient_buckets
from .distributed import use_global_batchnorm, world
from .lr import PlateauSchedule, StageSchedule, make_schedule
from .precision import Precision, make_precision
from .streams import CorpusData, corpus_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    """A worker's place in the group, its data, model and optimiser, fixed for the run."""

    cfg: Config
    rank: int
    size: int
    """World size (number of workers)."""
    device: torch.device
    run_dir: Path
    log: RunLogger | None
    """Rank 0's metrics logger (journal, then MLflow in the background); None on the other ranks, which log
    nothing."""
    datas: dict[str, CorpusData]
    """Corpus (training domain) -> label maps, class weights and shards, in the config's order."""
    model: EmoNet
    opt: torch.optim.SGD
    trainable: list[torch.nn.Parameter]
    """The optimiser's parameters: the ones whose gradients are summed over ranks."""
    class_weights: dict[str, torch.Tensor | None]
    sync_bn: bool
    """BatchNorm over the union batch of all ranks; otherwise running statistics are averaged before every
    evaluation and checkpoint."""
    finetune: bool
    """Finetuning modes start at the finetune learning rate (``optim.stage_lr``)."""
    schedule: StageSchedule | PlateauSchedule
    """The LR schedule as configured (the plateau schedule's position moves on in ``TrainState.plateau``)."""
    amp: Precision
    """``train.precision`` on this device: autocast dtype and fp16's loss scaler (its state is checkpointed)."""
    buckets: GradientBuckets | None = None
    """Multi-worker runs: sums :attr:`trainable`'s gradients over the ranks in buckets while backward runs."""

    @property
    def names(self) -> list[str]:
        return list(self.datas)

    @property
    def multi(self) -> bool:
        """Rounds over the corpora with fixed-length LR stages (otherwise epochs of one corpus)."""
        return isinstance(self.schedule, StageSchedule)


def setup_worker(cfg: Config, run: dict) -> Worker:
    """Steps [1] to [3] for the run ``run`` (``name``, ``dir``, ``tracking_uri``, ``mlflow_run_id``)."""
    # [1] config, rank, device ---------------------------------------------------------------------------------
    rank, size = world()
    quiet_ray_train_reports()
    device = resolve_device(cfg.train.device)
    torch.set_num_threads(cfg.train.threads or max(1, int(cfg.ray.cpus_per_worker)))
    run_dir = Path(run["dir"])
    (run_dir / "workers").mkdir(parents=True, exist_ok=True)
    (run_dir / "workers" / f"rank{rank}.pid").write_text(f"{os.getpid()}\n")  # which process is which rank
    # rank 0's MLflow calls go through a sender thread: a step never waits for the tracking server
    log = RunLogger(run.get("tracking_uri"), run.get("mlflow_run_id"), run_dir / "metrics.jsonl",
                    background=True) if rank == 0 else None

    # [2] data: label maps and class weights from index.json (the loaders come with the data positions, in [4]) --
    policy = UrlPolicy.from_config(cfg.data)  # timeouts and retries of remote shard reads
    datas = {d.name: d for d in (corpus_data(cfg.data.shards, spec, cfg.data.seed, policy)
                                 for spec in cfg.data.corpora)}
    names = list(datas)
    if cfg.train.schedule == "single" and len(names) != 1:
        raise ValueError(f"train.schedule=single trains one corpus; data.corpora lists {len(names)}")

    # [3] model and optimiser ----------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (and in every run with this seed)
    model = build_model_for_run(cfg, datas).to(device)
    # requires_grad and the optimiser's groups; transfer modes train the one new corpus, scratch/finetune all
    groups = set_mode(model, cfg.train.mode, None if cfg.train.mode in ("scratch", "finetune") else names[0])
    sync_bn = size > 1 and cfg.ray.sync_batchnorm
    if sync_bn:
        use_global_batchnorm(model)  # BN statistics over the union batch of all ranks
    finetune = cfg.train.mode in ("finetune", "head")
    amp = make_precision(cfg.train.precision, device)
    if log:
        say(f"[train] on {device} in {amp.name} (train.precision={cfg.train.precision})")
    # fp16: the fused SGD takes the loss scaler's inf flag on the device (the default one reads it on the host)
    opt = torch.optim.SGD(groups, lr=cfg.optim.stage_lr(0, finetune), momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay, fused=amp.fused_optimizer or None)
    trainable = [p for g in groups for p in g["params"]]
    if amp.fused_optimizer and cfg.optim.momentum:
        # torch's fused SGD decides "first step" for all parameters at once: a corpus whose parameters get their
        # first gradient after the others' (multi-corpus rounds) met missing momentum buffers, and its CPU kernel
        # wrote NaN into the weights. Zero buffers give the same first step (0.9 * 0 + g = g, exactly).
        for p in trainable:
            opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    class_w = {n: d.class_weights().to(device) if cfg.optim.class_weighted else None for n, d in datas.items()}
    buckets = gradient_buckets(model, trainable, cfg.ray.bucket_mb)  # None with one worker
    return Worker(cfg, rank, size, device, run_dir, log, datas, model, opt, trainable, class_w, sync_bn, finetune,
                  make_schedule(cfg.train, cfg.optim), amp, buckets)


def resolve_device(name: str) -> torch.device:
    """The worker's device for ``train.device``; a CUDA device becomes the process's current one, which is where
    NCCL's object collectives (``all_gather_object`` in evaluation and checks) put their tensors."""
    if name == "auto":
        device = torch.device("cpu")
        if torch.cuda.is_available():
            import ray.train

            device = ray.train.torch.get_device()  # the GPU Ray assigned to this worker
    else:
        device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def say(message: str) -> None:
    """One line of progress from a worker, through logging: :func:`emonet_dist.log.setup_worker` (called when the
    worker starts) writes the package's records to the process's own stdout, which Ray forwards to the driver once
    (Ray Train patches ``print`` in workers, which printed every line twice)."""
    log.info("%s", message)


def quiet_ray_train_reports() -> None:
    """Ray Train (v2) logs every ``ray.train.report`` call at INFO, with all metrics, on the driver's console
    (hundreds of long lines per run). Keep it for warnings; our own progress lines say the same, once."""
    try:
        from ray.train.v2._internal.execution import context as ray_context
    except ImportError:  # another Ray version: nothing to quiet
        return
    logging.getLogger(ray_context.__file__).setLevel(logging.WARNING)
