"""The one typed config tree that flows from the CLI through Ray workers to MLflow params.

Each component takes only its own section: ``prepare_corpus(..., cfg.prepare)``, ``write_shards(...,
cfg.shard)``, ``CorpusStream(cfg.data, ...)``, ``build_model(cfg.model, ...)``. The tree is made of frozen
dataclasses, so a config cannot change under a running job; ``Config.from_dict`` is strict (unknown keys and
wrong types are refused, naming the dotted key) and ``to_dict`` round-trips.

Load a YAML file and apply ``a.b=c`` overrides with :func:`load_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import typed
from .errors import ConfigError, short
from .limits import check_limits
from .names import check_name


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_key(cond: bool, key: str, msg: str) -> None:
    """Like :func:`_check` for a message that starts with the field ``key`` (the loader makes it dotted)."""
    if not cond:
        raise ConfigError(msg, key=key)


# --------------------------------------------------------------------------------------------------------------
# corpus preparation and sharding
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareConfig:
    """How ``emonet corpus prepare`` checks audio and assigns partitions."""

    seed: int = 0
    """Seed of the speaker-to-partition assignment (the same seed gives the same partitions)."""
    split: Literal["auto", "speaker", "folds", "official"] = "auto"
    """``auto``: the recipe's default (``speaker`` for most; IEMOCAP uses its sessions as folds; a CSV with a
    partition column keeps it). ``speaker``: speaker-independent train/dev/test. ``folds``:
    leave-one-speaker-group-out folds, written as partitions ``fold1..foldK`` (a recipe may define the groups,
    e.g. IEMOCAP sessions). ``official``: keep the partition the recipe or CSV gives."""
    dev_fraction: float = 0.15
    """Target share of utterances in dev (speakers are kept whole, so the share is approximate)."""
    test_fraction: float = 0.15
    num_folds: int = 0
    """Folds for ``split=folds``; 0 means one fold per speaker group."""
    allow_speaker_overlap: bool = False
    """Accept partitions that share speakers. Scores from such partitions are not speaker-independent."""
    check_audio: Literal["decode", "header"] = "decode"
    """``decode`` reads every file fully (catches truncation); ``header`` only reads headers (fast, large corpora)."""
    jobs: int = 0
    """Worker processes for audio checks; 0 uses every core."""

    def __post_init__(self) -> None:
        check_limits(self)
        _check_key(self.dev_fraction + self.test_fraction < 1, "dev_fraction",
                   f"dev_fraction + test_fraction must leave room for train, got {self.dev_fraction} + "
                   f"{self.test_fraction}")
        _check_key(self.num_folds != 1, "num_folds", "num_folds must be 0 (one per group) or at least 2, got 1")


@dataclass(frozen=True)
class ShardConfig:
    """How ``emonet shard`` packs a prepared corpus into WebDataset tar shards."""

    samples_per_shard: int = 256
    """Utterances per shard (a shard also closes early at ``max_shard_mb``)."""
    max_shard_mb: float = 512.0
    sample_rate: int = 16000
    """Audio is resampled to this rate and down-mixed to mono before FLAC encoding."""
    seed: int = 0
    """Seed of the shuffle applied before packing, so each shard mixes speakers and classes."""
    jobs: int = 0
    """Worker processes for decode/resample/encode; 0 uses every core."""

    def __post_init__(self) -> None:
        check_limits(self)


# --------------------------------------------------------------------------------------------------------------
# data streaming
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusConfig:
    """One corpus (a "domain") in a training run."""

    name: str
    """Corpus name, as in the shard directory (``SHARDS/<name>/...``)."""
    task: Literal["emotion", "speaker", "arousal", "valence"] = "emotion"
    """Which label drives the head: the emotion label, the speaker (speaker-ID pretraining), or the emotion
    mapped to arousal (2 classes) or valence (3 classes) through the paper's Table 2."""
    train: tuple[str, ...] = ("train",)
    """Partitions used for training (e.g. several folds)."""
    dev: tuple[str, ...] = ("dev",)
    test: tuple[str, ...] = ("test",)
    epoch_mode: Literal["inherit", "exact", "resampled"] = "inherit"
    """Per-corpus override of data.epoch_mode (e.g. a VoxCeleb-sized speaker corpus streams resampled shards
    while the emotion corpora keep exact epochs)."""

    def __post_init__(self) -> None:
        # The name is a shard directory (SHARDS/<name>/) and the partitions are its subdirectories.
        check_name(self.name, "corpus name")
        for part in (*self.train, *self.dev, *self.test):
            check_name(part, f"partition of corpus {self.name}")

    @property
    def domain(self) -> str:
        """Name of the model domain (adapters, BNs, head): the corpus, or ``corpus:task`` for mapped tasks."""
        return self.name if self.task == "emotion" else f"{self.name}:{self.task}"


@dataclass(frozen=True)
class DataConfig:
    """Where shards live and how they are streamed to each rank."""

    shards: str = "shards"
    """Shard root: a directory, an ``http(s)://`` URL prefix, or a ``pipe:`` command template containing
    ``{path}`` (e.g. ``pipe:aws s3 cp s3://bucket/shards/{path} -``). A ``pipe:`` template is one plain command
    with arguments, run without a shell; shell syntax (``| ; & < > ( ) $``) is refused when it is used."""
    corpora: tuple[CorpusConfig, ...] = ()
    batch_size: int = 64
    max_seconds: float = 5.0
    """Training crops a random chunk of at most this many seconds (paper: 5 s)."""
    eval_max_seconds: float = 0.0
    """Evaluation uses whole utterances when 0, otherwise the first ``eval_max_seconds``."""
    epoch_mode: Literal["exact", "resampled"] = "exact"
    """``exact``: every training utterance once per epoch across all ranks, equal batch counts per rank.
    ``resampled``: an infinite stream of shards drawn with replacement (large corpora)."""
    shuffle_window: int = 512
    """Samples are shuffled within windows of this many consecutive samples of the (shuffled) shard sequence."""
    num_workers: int = 1
    """Loader worker processes per corpus and rank (0 decodes in the training process)."""
    prefetch_factor: int = 2
    """Batches each loader worker prepares ahead (with ``num_workers`` > 0)."""
    pin_memory: bool | Literal["auto"] = "auto"
    """Training batches in page-locked host memory, so that the copy to a GPU runs asynchronously
    (``non_blocking``); ``auto``: on when the worker trains on CUDA."""
    seed: int = 0
    bad_samples: Literal["fail", "skip"] = "fail"
    """A malformed sample (missing member, bad metadata, undecodable audio, a shard that fails its sha256):
    ``fail`` stops with an error naming shard and member; ``skip`` drops it from its batch and counts it
    (``CorpusLoader.skipped``)."""
    url_timeout_s: float = 30.0
    """Connect/read timeout of ``http(s)://`` shard reads and of a ``pipe:`` command's output, in seconds."""
    url_retries: int = 3
    """Extra attempts (with doubling backoff from 1 s) to open an ``http(s)://`` shard after a timeout, a
    connection error or a 5xx answer."""

    def __post_init__(self) -> None:
        check_limits(self)
        names = [c.domain for c in self.corpora]
        dup = sorted({n for n in names if names.count(n) > 1})
        _check_key(not dup, "corpora", f"corpora lists {', '.join(short(d) for d in dup[:3])} more than once")


# --------------------------------------------------------------------------------------------------------------
# model (EmoNet, paper section 5)
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrontendConfig:
    """Log-mel frontend (``emonet_dist.model.frontend``): runs on the model's device, no trainable weights."""

    sample_rate: int = 16000
    """Hz; waveforms must already be at this rate (the shards resample to it)."""
    n_fft: int = 512
    """FFT and window size in samples (512 = 32 ms at 16 kHz, paper section 5.1)."""
    hop_length: int = 256
    """Frame shift in samples (256 = 16 ms, 50 % overlap)."""
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 0.0
    """0 means sample_rate / 2."""
    log_floor: float = 1e-6
    """log(max(mel, floor)) keeps silence finite (padding is set to 0 separately, see the frontend)."""
    normalize: Literal["none", "utterance"] = "none"
    """``utterance``: each mel band of each utterance (or crop) to mean 0 and variance 1 over its own valid frames
    (cepstral mean and variance normalisation). It removes gain and channel tilt, and with them the utterance's
    loudness and spectral level, which carry arousal: on the cross-validated real-corpus grid it lowered scratch UAR
    on all three corpora (docs/results.md). ``none`` (the default, the paper's): raw log-mels."""

    def __post_init__(self) -> None:
        check_limits(self)
        nyquist = self.sample_rate / 2
        _check_key(self.f_max <= nyquist, "f_max", f"f_max must be <= sample_rate / 2 = {nyquist:g}, got {self.f_max}")
        _check_key(self.f_min < (self.f_max or nyquist), "f_min",
                   f"f_min must be below f_max (or sample_rate / 2 when f_max = 0), got {self.f_min}")


@dataclass(frozen=True)
class PoolingConfig:
    """How the backbone's (C, F', T') output becomes one vector per utterance (padded positions get no weight)."""

    kind: Literal["attention", "stats"] = "attention"
    """``attention``: 2D self-attention pooling over the F'xT' positions with smoothing lam (EmoNet), output C.
    ``stats``: masked mean + standard deviation over the same positions (Padi et al.), output 2C."""
    lam: float = 0.3
    """Softmax smoothing factor lambda; 0 is the masked mean, 1 is no smoothing."""
    units: int = 256
    """Hidden units of the attention scorer e = u^T tanh(W x + b)."""
    shared: bool = True
    """One attention module for all corpora (the paper's multi-corpus setting) or one per corpus."""

    def __post_init__(self) -> None:
        check_limits(self)


@dataclass(frozen=True)
class HeadConfig:
    """Per-corpus classifier: FC(hidden) -> BN -> ReLU -> dropout -> logits.

    ``hidden`` is the only free knob of the per-corpus size. With the paper's widths a corpus owns 301,088
    adapter + 4,160 BN parameters, plus ``hidden * (259 + classes) + classes`` in its head, against 2,775,840
    shared ones. hidden 32 (4 classes): 313,668 per corpus, 3,089,508 for one corpus, and 26 corpora are 3.54x
    one corpus (the paper reports 3.5x; adapters and BNs alone already give 3.48x). hidden 64 gives 3.60x,
    hidden 128 (the original EmoNet code's 256 // 2) 3.72x. See ``emonet_dist.model.summary``.
    """

    hidden: int = 32
    dropout: float = 0.2
    """Dropout between the hidden layer and the logits (training only)."""
    speaker_head: Literal["softmax", "aam"] = "softmax"
    """Head type for ``kind="speaker"`` corpora: plain softmax or additive angular margin (AAM-softmax)."""
    speaker_hidden: int = 256
    """Embedding size of speaker heads (thousands of classes need a wider bottleneck than emotion heads)."""
    aam_margin: float = 0.2
    """Additive angular margin m in radians (training only; needs the labels)."""
    aam_scale: float = 30.0
    """Logit scale s of the AAM head: logits = s * cos(theta (+ m for the target class))."""

    def __post_init__(self) -> None:
        check_limits(self)


@dataclass(frozen=True)
class ModelConfig:
    """EmoNet (paper section 5.2): log-mel -> ResNet with per-corpus residual adapters -> pooling -> heads."""

    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    specaugment: Literal["none", "conservative", "aggressive"] = "none"
    """Training-time masking policy of Padi et al. Table 1 (conservative F=15, W=50; aggressive F=27, W=70;
    p=0.2, 2 frequency + 2 time masks). W is the time-mask width; no time warping is applied."""
    stem_width: int = 32
    base_width: int = 64
    """Filters of the first stack; stack i has round(base_width * 2**i * widen_factor) filters (paper: 64, 128, 256)."""
    widen_factor: float = 1.0
    num_stacks: int = 3
    blocks_per_stack: int = 2
    adapters: bool = True
    """Parallel 1x1 residual adapters per corpus next to every 3x3 conv (False: a plain ResNet, BNs still per
    corpus)."""
    adapter_init: Literal["zero", "kaiming"] = "zero"
    """``zero`` starts a new corpus from the shared function."""
    fuse_adapters: bool = True
    """Run conv3x3(x, W) + conv1x1(x, A) as one conv3x3(x, W + A at the kernel centre). Exact in real arithmetic
    (same stride and padding), ~10 % fewer FLOPs and one kernel instead of two; False runs the two convs."""
    channels_last: bool = True
    """Run the backbone in channels_last memory format (oneDNN forward convs up to 2x faster on CPU, cuDNN's
    preferred layout for mixed precision; see docs/benchmarks.md). Numerically the same as NCHW."""
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def __post_init__(self) -> None:
        check_limits(self)
        widths = (self.stem_width, *self.stack_widths)
        _check_key(all(a <= b for a, b in zip(widths, widths[1:])), "base_width",
                   f"base_width and widen_factor give widths {widths} that shrink after stem_width (the shortcut "
                   f"pads channels with zeros); raise base_width/widen_factor")

    @property
    def stack_widths(self) -> tuple[int, ...]:
        """Filters per stack, e.g. (64, 128, 256)."""
        return tuple(max(1, round(self.base_width * 2**i * self.widen_factor)) for i in range(self.num_stacks))


# --------------------------------------------------------------------------------------------------------------
# training (EmoNet section 5.2.2), Ray, MLflow
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum and class-weighted cross-entropy; the LR falls by ``lr_decay`` at each stage."""

    lr: float = 0.1
    """LR of the first stage (paper: 0.1 -> 0.01 -> 0.001)."""
    lr_decay: float = 0.1
    stages: int = 3
    finetune_scale: float = 0.1
    """``finetune`` and ``head`` transfer modes start at lr * finetune_scale (paper: 0.01)."""
    momentum: float = 0.9
    weight_decay: float = 1e-6
    class_weighted: bool = True
    """Weight each class by N / (C * n_c) of the corpus's training partition."""

    def __post_init__(self) -> None:
        check_limits(self)

    def stage_lr(self, stage: int, finetune: bool = False) -> float:
        return self.lr * (self.finetune_scale if finetune else 1.0) * self.lr_decay ** stage


@dataclass(frozen=True)
class TrainConfig:
    schedule: Literal["multi", "single"] = "multi"
    """``multi``: a step is one batch per corpus (round-robin, or drawn by ``corpus_sampling``) and each LR stage
    lasts ``steps_per_stage`` steps. ``single``: epochs of one corpus; the LR drops after ``patience`` epochs
    without a dev-UAR gain, and training stops after the last stage's patience."""
    steps_per_stage: int = 2500
    patience: int = 50
    """Epochs without a dev-UAR gain before the LR drops (single-corpus schedule)."""
    max_epochs: int = 0
    """Cap on epochs for the single-corpus schedule (0: no cap)."""
    eval_every: int = 250
    """Rounds between dev evaluations (multi); the single schedule evaluates every epoch."""
    checkpoint_every: int = 500
    """Rounds (multi) or epochs (single) between full checkpoints; best-dev states are kept as they happen."""
    log_every: int = 10
    shuffle_rounds: bool = True
    """Draw the corpus order of each round from (seed, round); identical on every rank (``round_robin`` only)."""
    corpus_sampling: Literal["round_robin", "temperature"] = "round_robin"
    """Which corpus each of a step's K batches comes from (multi; ``emonet_dist.data.schedule``). ``round_robin``
    (the paper's): every corpus once per step. ``temperature``: K corpora drawn with probability proportional to
    n_c^(1/T), n_c the corpus's training utterances, from (data.seed, step): the same on every rank and after a
    resume. A step is K batches either way, so ``steps_per_stage`` means the same amount of training."""
    sampling_temperature: float = 1.0
    """T of ``temperature`` sampling: 1 samples corpora in proportion to their size, larger T flattens towards
    uniform (ignored by ``round_robin``)."""
    mode: Literal["scratch", "adapters", "head", "finetune", "zero-shared"] = "scratch"
    """What trains (see ``emonet_dist.model.modes``); transfer runs set it with ``emonet transfer --mode``."""
    init_from: str = ""
    """Pretrained run directory, run id or checkpoint to start from (transfer); empty: from scratch."""
    bn_recalibration_batches: int = 8
    """Before each dev evaluation, re-estimate the corpus's BatchNorm statistics from this many training batches
    with the current weights (precise BN); 0 keeps the momentum averages. Early in training the momentum
    averages still describe the initial weights, so dev UAR sits at chance for dozens of steps, which would
    trigger plateau LR drops and ASHA stops for the wrong reason. Gradients are unaffected."""
    device: str = "auto"
    """``auto`` (CUDA when the worker has a GPU), ``cpu``, ``cuda``, ``cuda:1``..."""
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Autocast dtype of the model's forward (``emonet_dist.train.precision``): ``bf16`` or ``fp16`` (with a loss
    scaler, checkpointed); ``auto`` takes bf16 on a GPU that supports it, else fp32. Weights, the loss
    normalisation and the gradient sum stay fp32, and so do the log-mel frontend and evaluation."""
    threads: int = 0
    """torch intra-op threads per worker; 0 uses the worker's CPU allotment."""

    def __post_init__(self) -> None:
        check_limits(self)


@dataclass(frozen=True)
class RayConfig:
    address: str = ""
    """Empty: start Ray locally. ``auto`` or ``ray://host:10001`` joins a running cluster."""
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """``auto``: NCCL with GPUs, gloo otherwise."""
    sync_batchnorm: bool = False
    """``false`` (the default, as in PyTorch DDP): each worker normalises with its own batch's statistics, and the
    running statistics are averaged over the workers before every evaluation and checkpoint; the cost is noisier
    batch statistics when per-worker batches are small. ``true``: BatchNorm over the union batch of all workers
    (SyncBatchNorm's semantics): 2 workers compute exactly what 1 worker computes on the union batch, at the price
    of two small collectives per BN layer per step (see docs/benchmarks.md)."""
    bucket_mb: float = 25.0
    """Gradients are summed over the workers in buckets of at most this many MB, each launched as soon as backward
    has produced its gradients (PyTorch DDP's ``bucket_cap_mb``); the first bucket holds at most 1 MB."""
    max_failures: int = 0
    """Worker-group restarts from the latest checkpoint before the run fails."""
    storage_path: str = ""
    """Where Ray keeps checkpoints; empty: ``<output_dir>/ray``. Use shared storage on multi-node clusters."""
    resources_timeout_s: float = 120.0
    """How long a run waits for the cluster to offer the CPUs/GPUs its workers ask for (an autoscaler adding nodes)
    before it fails with what it asked for and what the cluster has; 0: fail at once."""

    def __post_init__(self) -> None:
        check_limits(self)


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = ""
    """MLflow tracking URI; empty: ``sqlite:///<absolute output_dir>/mlflow.db``."""
    experiment: str = "emonet"
    enabled: bool = True


@dataclass(frozen=True)
class TuneConfig:
    """Ray Tune sweeps (``emonet tune``): each trial is one training run with a sampled config."""

    num_samples: int = 6
    scheduler: Literal["asha", "none"] = "asha"
    search: Literal["random", "optuna"] = "random"
    max_concurrent: int = 2
    objective: str = "mean"
    """``mean``: mean dev UAR over the run's corpora; otherwise the name of one corpus (its dev UAR)."""
    grace_period: int = 10
    """Schedule steps (rounds, or batches in single-corpus runs) before ASHA may stop a trial."""
    reduction_factor: int = 2
    max_failures: int = 1
    """Retries of a failed trial before it is recorded as failed (it never aborts the sweep)."""
    driver_cpus: float = 0.01
    """CPU reserved for each trial's driver; the workers take ray.num_workers x ray.cpus_per_worker."""

    def __post_init__(self) -> None:
        check_limits(self)
        _check(bool(self.objective), "tune.objective must be 'mean' or a corpus name")


# --------------------------------------------------------------------------------------------------------------
# the tree
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    name: str = "emonet"
    seed: int = 0
    output_dir: str = "runs"
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def __post_init__(self) -> None:
        check_limits(self)
        check_name(self.name, "name")  # it names run directories: an identifier, never a path

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        return typed.from_dict(cls, data)

    def to_dict(self) -> dict:
        return typed.to_dict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict:
        """Dotted keys -> values, as logged to MLflow params."""
        return typed.flatten(self.to_dict())

    def override(self, *overrides: str) -> Config:
        """A copy with a user's ``section.key=value`` texts applied (CLI arguments, spec overrides)."""
        return typed.apply_overrides(Config, self.to_dict(), list(overrides))

    def replace(self, values: dict[str, Any] | None = None, **top: Any) -> Config:
        """A copy with typed values set: ``cfg.replace({"train.steps_per_stage": 12}, output_dir=str(path))``.

        What internal code uses to derive a config (string overrides are for users); the copy is checked like any
        config."""
        return typed.replace_values(Config, self.to_dict(), {**(values or {}), **top})


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from the defaults) and apply ``a.b=c`` overrides."""
    data = typed.load_yaml_file(path) if path is not None else {}
    return typed.apply_overrides(Config, data, list(overrides))
