"""The EmoNet module: frontend -> ResNet with per-corpus adapters -> pooling -> per-corpus head.

One forward call serves one corpus (the training loop sends one corpus per step, the same on all ranks):
``model(waves (B, S), lengths (B,), corpus) -> logits (B, num_classes)``. Only that corpus's adapters, BNs,
pooling (if per corpus) and head take part, so the others receive no gradient and keep their BN statistics.

Ownership. Everything per corpus sits in :class:`~emonet_dist.model.adapters.CorpusDict` entries; everything
else is shared. :meth:`EmoNet.corpus_parameters`, :meth:`EmoNet.shared_parameters` and
:meth:`EmoNet.corpus_buffers` are the lists the distributed loop needs (per-corpus gradient handling and the
all-reduce of a corpus's BN running statistics).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import EmonetError
from .adapters import CorpusDict, corpus_key
from .frontend import LogMelFrontend
from .heads import build_head
from .pooling import build_pooling, pooled_dim
from .resnet import ResNet

KINDS = ("emotion", "speaker")


@dataclass(frozen=True)
class CorpusInfo:
    """What the model knows about one corpus (saved with the weights)."""

    name: str
    kind: str
    """``emotion`` or ``speaker`` (speaker-ID pretraining; takes the speaker head type)."""
    num_classes: int
    labels: tuple[str, ...] | None
    """Class names in logit order, when known."""
    key: str
    """ModuleDict key (:func:`~emonet_dist.model.adapters.corpus_key`)."""


class EmoNet(nn.Module):
    """EmoNet with any number of corpora. Build with :func:`build_model`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.frontend = LogMelFrontend(cfg.frontend, cfg.specaugment)
        self.backbone = ResNet(cfg)
        channels = self.backbone.out_channels
        if cfg.pooling.shared:
            self.pooling: nn.Module = build_pooling(cfg.pooling, channels)
        else:
            self.pooling = CorpusDict(functools.partial(build_pooling, cfg.pooling, channels))
        self.embed_dim = pooled_dim(cfg.pooling, channels)
        self.heads = CorpusDict(None, copyable=False)
        self._corpora: dict[str, CorpusInfo] = {}
        self._frozen_bns: tuple[str, ...] = ()  # module names kept in eval mode (see modes.py)

    # ---------------------------------------------------------------------------------------------- corpora
    @property
    def corpora(self) -> dict[str, CorpusInfo]:
        """Corpus name -> info, in the order they were added."""
        return dict(self._corpora)

    def add_corpus(self, name: str, num_classes: int, kind: str = "emotion",
                   labels: list[str] | tuple[str, ...] | None = None,
                   init_from: str | None = None) -> CorpusInfo:
        """Create adapters, BNs, pooling (if per corpus) and a head for a new corpus; others are untouched.

        Args:
            name: any non-empty string (':' and '.' are fine, e.g. ``ravdess:arousal``).
            num_classes: logits of the head (>= 2).
            kind: ``emotion`` (FC-BN-ReLU-dropout head) or ``speaker`` (``cfg.head.speaker_head``).
            labels: class names in logit order (saved with the weights).
            init_from: start the adapters, BNs (weights and running statistics) and per-corpus pooling as a copy
                of this existing corpus, so the new corpus begins with that corpus's function (needed by the
                ``head`` mode). The head is always new. Default: zero (or Kaiming) adapters and fresh BNs.
        """
        if name in self._corpora:
            raise EmonetError(f"corpus {name!r} is already in the model; pick another name")
        if kind not in KINDS:
            raise EmonetError(f"corpus kind {kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise EmonetError(f"corpus {name!r} needs at least 2 classes, got {num_classes!r}")
        if labels is not None and len(labels) != num_classes:
            raise EmonetError(f"corpus {name!r}: {len(labels)} labels given for {num_classes} classes")
        src = self.corpus_info(init_from).key if init_from is not None else None
        key = corpus_key(name)
        like = next(self.backbone.parameters())  # new modules follow the model's device and dtype
        for cd in self._corpus_dicts():
            if cd is not self.heads:
                cd.add(key, like=like, init_from=src).train(self.training)
        head = build_head(kind, self.embed_dim, num_classes, self.cfg.head)
        self.heads.add(key, like=like, module=head).train(self.training)
        info = CorpusInfo(name, kind, num_classes, tuple(labels) if labels is not None else None, key)
        self._corpora[name] = info
        return info

    def corpus_info(self, name: str) -> CorpusInfo:
        """The :class:`CorpusInfo` of ``name`` (a clear error naming the known corpora otherwise)."""
        try:
            return self._corpora[name]
        except KeyError:
            known = ", ".join(map(repr, self._corpora)) or "none"
            raise EmonetError(f"corpus {name!r} is not in the model (it has: {known}); add it with "
                              "model.add_corpus(name, num_classes)") from None

    def _corpus_dicts(self) -> list[CorpusDict]:
        return [m for m in self.modules() if isinstance(m, CorpusDict)]

    # ------------------------------------------------------------------------------------------- forward
    def encode(self, waves: Tensor, lengths: Tensor, corpus: str) -> tuple[Tensor, Tensor]:
        """Backbone features ``(B, C, F', T')`` and valid output frames ``(B,)``.

        ``waves (B, S)``, ``lengths (B,)`` as for :meth:`forward`."""
        key = self.corpus_info(corpus).key
        x, n_frames = self.frontend(waves, lengths)
        return self.backbone(x, n_frames, key)

    def embed(self, waves: Tensor, lengths: Tensor, corpus: str) -> Tensor:
        """Pooled utterance vector ``(B, embed_dim)``: the head's input."""
        feats, n_out = self.encode(waves, lengths, corpus)
        pool = self.pooling[self.corpus_info(corpus).key] if isinstance(self.pooling, CorpusDict) else self.pooling
        return pool(feats, n_out)

    def forward(self, waves: Tensor, lengths: Tensor, corpus: str, labels: Tensor | None = None) -> Tensor:
        """Logits ``(B, num_classes)`` of ``corpus``.

        Args:
            waves: ``(B, S)`` float32, 16 kHz, zero-padded; lengths: ``(B,)`` int64 samples.
            corpus: corpus name. labels: ``(B,)`` int64, used only by heads that need them (AAM, training).
        """
        return self.heads[self.corpus_info(corpus).key](self.embed(waves, lengths, corpus), labels)

    def freeze_batchnorms(self, names: list[str] | tuple[str, ...]) -> None:
        """Keep these BN modules (qualified names) in eval mode from now on, also across ``train()`` calls."""
        for name in names:
            self.get_submodule(name)  # fail early on a wrong name
        self._frozen_bns = tuple(names)
        self.train(self.training)

    @property
    def frozen_batchnorms(self) -> tuple[str, ...]:
        return self._frozen_bns

    def train(self, mode: bool = True) -> EmoNet:
        """As ``nn.Module.train``, but BNs frozen by the current mode (``modes.set_mode``) stay in eval."""
        super().train(mode)
        for name in self._frozen_bns:
            self.get_submodule(name).eval()
        return self

    # ----------------------------------------------------------------------------------------- ownership
    def corpus_modules(self, name: str) -> dict[str, nn.Module]:
        """Qualified module name -> this corpus's entry in every CorpusDict (adapters, BNs, pooling, head)."""
        key = self.corpus_info(name).key
        return {f"{path}.{key}": cd[key] for path, cd in self.named_modules()
                if isinstance(cd, CorpusDict) and key in cd}

    def named_corpus_parameters(self, name: str) -> Iterator[tuple[str, nn.Parameter]]:
        for path, mod in self.corpus_modules(name).items():
            for n, p in mod.named_parameters():
                yield f"{path}.{n}", p

    def corpus_parameters(self, name: str) -> list[nn.Parameter]:
        """Parameters that belong to ``name`` alone."""
        return [p for _, p in self.named_corpus_parameters(name)]

    def named_shared_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        owned = {id(p) for cd in self._corpus_dicts() for p in cd.parameters()}
        for n, p in self.named_parameters():
            if id(p) not in owned:
                yield n, p

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters used by every corpus (the 3x3 convs and, if shared, the attention pooling)."""
        return [p for _, p in self.named_shared_parameters()]

    def corpus_buffers(self, name: str) -> dict[str, Tensor]:
        """Qualified name -> buffer of ``name``: BN running mean/var and num_batches_tracked (to all-reduce)."""
        return {f"{path}.{n}": b for path, mod in self.corpus_modules(name).items() for n, b in mod.named_buffers()}

    def corpus_batchnorms(self, name: str) -> dict[str, nn.modules.batchnorm._BatchNorm]:
        """Qualified name -> BatchNorm module of ``name`` (backbone and head)."""
        return {f"{path}.{n}".rstrip("."): m for path, mod in self.corpus_modules(name).items()
                for n, m in mod.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def build_model(cfg: ModelConfig, corpora: dict[str, int] | None = None) -> EmoNet:
    """EmoNet for ``cfg`` with emotion corpora ``{name: num_classes}`` (more via ``model.add_corpus``).

    The model is built on the CPU in float32; move it with ``model.to(device)``.
    """
    model = EmoNet(cfg)
    for name, num_classes in (corpora or {}).items():
        model.add_corpus(name, num_classes)
    return model
