"""Training modes (paper section 5.2.2 and 6; Xi et al. 2021): one call sets ``requires_grad`` and returns the
optimiser's parameter groups.

=============  =============================================================================================
mode           trains
=============  =============================================================================================
scratch        shared weights + the corpus (or, with ``corpus=None``, every corpus: multi-corpus training)
finetune       the same parameters as scratch; meant for a loaded model (the paper starts it at LR 0.01)
adapters       only the corpus's adapters, BNs, per-corpus pooling and head; shared weights frozen
head           only the corpus's head; the backbone (incl. the corpus's BNs) is a frozen feature extractor
zero-shared    as ``adapters``, after zeroing and freezing every shared 3x3 conv weight (Xi et al.'s ablation:
               is the shared knowledge needed, or just the adapters' capacity?)
=============  =============================================================================================

BatchNorm running statistics. A BN in train mode updates its running mean/var even when its weights are
frozen, so "frozen" BNs must be kept in eval mode:

* ``head``: the corpus's backbone BNs are frozen (eval mode, fixed statistics); the head's own BN trains. The
  backbone must therefore already describe this corpus: add it with ``add_corpus(..., init_from=source)``
  (refused otherwise, since fresh BNs hold mean 0 / var 1 and would feed the head unnormalised features).
* ``adapters`` / ``zero-shared``: the corpus's own BNs train (they are its parameters and statistics). No BN
  is shared, and other corpora's BNs do not run in this corpus's forward pass, so nothing else moves.
* ``scratch`` / ``finetune``: every BN that runs trains.

The frozen set is stored on the model and re-applied by ``EmoNet.train()``, so the loop can keep calling
``model.train()`` every epoch. Parameters that do not train get ``requires_grad=False`` and are left out of
the groups, so neither weight decay nor momentum can touch them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import EmonetError
from .adapters import AdaptedConv
from .build import EmoNet

MODES = ("scratch", "adapters", "head", "finetune", "zero-shared")


def set_mode(model: EmoNet, mode: str, corpus: str | Sequence[str] | None = None) -> list[dict]:
    """Configure ``model`` for ``mode`` and return optimiser parameter groups.

    Args:
        corpus: the corpus being trained, or a list of corpora trained together (round-robin); ``None`` means
            every corpus in the model and is accepted by scratch/finetune only.
    Returns:
        ``[{"name": "shared", "corpus": None, "params": [...]}, {"name": "corpus:<c>", "corpus": c,
        "params": [...]}, ...]`` with empty groups left out; pass it to ``torch.optim.SGD`` as is (extra keys
        are kept in ``optimizer.param_groups``) or set per-group LRs first.
    """
    if mode not in MODES:
        raise EmonetError(f"unknown model mode {mode!r}; use one of {', '.join(MODES)}")
    if corpus is None and mode in ("adapters", "head", "zero-shared"):
        raise EmonetError(f"mode {mode!r} trains given corpora only; pass corpus=<name> (or a list of names)")
    if mode in ("adapters", "zero-shared") and not model.cfg.adapters:
        raise EmonetError(f"mode {mode!r} needs adapters, but the model was built with model.adapters=false")
    names = list(model.corpora) if corpus is None else [corpus] if isinstance(corpus, str) else list(corpus)
    names = [model.corpus_info(n).name for n in names]  # a clear error for unknown names

    for p in model.parameters():
        p.requires_grad_(False)
    frozen_bns: list[str] = []
    groups: list[dict] = []

    if mode in ("scratch", "finetune"):
        groups.append(_group("shared", None, model.shared_parameters()))
    if mode == "zero-shared":
        with torch.no_grad():
            for m in model.backbone.modules():
                if isinstance(m, AdaptedConv):
                    m.weight.zero_()
    for name in names:
        if mode != "head":
            groups.append(_group(f"corpus:{name}", name, model.corpus_parameters(name)))
            continue
        heads = [m for n, m in model.corpus_modules(name).items() if n.startswith("heads.")]
        bns = {n: m for n, m in model.corpus_batchnorms(name).items() if not n.startswith("heads.")}
        untrained = [n for n, m in bns.items() if int(m.num_batches_tracked) == 0]
        if untrained:
            raise EmonetError(f"mode 'head' freezes corpus {name!r}'s backbone, but its BNs have never seen data "
                              f"({len(untrained)} of {len(bns)}, e.g. {untrained[0]}); add the corpus with "
                              "add_corpus(..., init_from=<pretrained corpus>) or use mode 'adapters'")
        frozen_bns += sorted(bns)
        groups.append(_group(f"corpus:{name}", name, [p for m in heads for p in m.parameters()]))

    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    model.freeze_batchnorms(frozen_bns)
    return [g for g in groups if g["params"]]


def _group(name: str, corpus: str | None, params: list[nn.Parameter]) -> dict:
    return {"name": name, "corpus": corpus, "params": list(params)}


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (what the current mode trains)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
