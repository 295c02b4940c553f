"""Per-corpus heads: ``(B, D)`` pooled vector -> ``(B, num_classes)`` logits.

* :class:`ClassifierHead` (EmoNet, section 5.2.1): FC -> BN -> ReLU -> dropout -> FC. Emotion corpora, and
  speaker corpora with ``head.speaker_head = softmax`` (with ``head.speaker_hidden`` units).
* :class:`AAMHead`: additive angular margin softmax (ArcFace; Deng et al. 2019) for speaker-ID pretraining
  with thousands of classes: FC -> BN gives an embedding; logits are ``s * cos(theta_j)`` against normalised
  class weights, with ``cos(theta_y + m)`` for the target class while training. The margin needs the labels,
  so every head takes ``forward(x, labels=None)`` and advertises ``needs_labels``; the model passes the labels
  through (``model(waves, lengths, corpus, labels=y)``). Without labels (eval, prediction) the AAM head returns
  the margin-free cosine logits, whose argmax is the predicted speaker.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import HeadConfig


class ClassifierHead(nn.Module):
    """FC(hidden) -> BN -> ReLU -> dropout -> FC(num_classes). ``(B, in_dim) -> (B, num_classes)``."""

    needs_labels = False

    def __init__(self, in_dim: int, hidden: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """labels are accepted and ignored (one signature for every head)."""
        return self.out(self.dropout(F.relu(self.bn(self.fc(x)))))


class AAMHead(nn.Module):
    """FC -> BN embedding, cosine classifier with additive angular margin. ``(B, in_dim) -> (B, num_classes)``.

    Args:
        margin: m in radians, added to the target class's angle in training.
        scale: s, multiplies the cosines.
    """

    needs_labels = True

    def __init__(self, in_dim: int, hidden: int, num_classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.weight = nn.Parameter(torch.empty(num_classes, hidden))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale

    def cosine(self, x: Tensor) -> Tensor:
        """``(B, num_classes)`` cosines between the normalised embedding and class weights (fp32)."""
        emb = self.bn(self.fc(x)).float()
        return F.linear(F.normalize(emb, dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """labels ``(B,)`` int64 are required in training (the margin applies to the target class)."""
        cos = self.cosine(x)
        if labels is None:
            if self.training:
                raise ValueError("the AAM speaker head needs labels in training: call model(waves, lengths, corpus, "
                                 "labels=y), or switch to eval mode for margin-free scores")
            return self.scale * cos
        m = self.margin
        sin = torch.sqrt((1.0 - cos.square()).clamp_min(1e-7))
        phi = cos * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        # Past theta = pi - m, cos(theta + m) stops decreasing; use the usual linear extension (ArcFace code).
        phi = torch.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)
        target = F.one_hot(labels.long(), cos.shape[1]).bool()
        return self.scale * torch.where(target, phi, cos)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, scale={self.scale}"


def build_head(kind: str, in_dim: int, num_classes: int, cfg: HeadConfig) -> nn.Module:
    """The head of a corpus of ``kind`` ("emotion" or "speaker") with ``num_classes`` outputs."""
    if kind == "emotion":
        return ClassifierHead(in_dim, cfg.hidden, num_classes, cfg.dropout)
    if kind == "speaker":
        if cfg.speaker_head == "aam":
            return AAMHead(in_dim, cfg.speaker_hidden, num_classes, cfg.aam_margin, cfg.aam_scale)
        return ClassifierHead(in_dim, cfg.speaker_hidden, num_classes, cfg.dropout)
    raise ValueError(f"unknown corpus kind {kind!r}; use 'emotion' or 'speaker'")
