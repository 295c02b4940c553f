"""Parameter and compute accounting for ``emonet model summary [--corpora N] [overrides]``.

:func:`summarize` returns printable text and the same numbers as a dict: shared versus per-corpus
parameters (and their parts), totals for 1, N and 26 corpora (the paper's "3.5 times the parameters of a
single-database model"), FLOPs per second of audio for a forward pass and a train step (forward + backward,
counted by ``torch.utils.flop_counter.FlopCounterMode`` on the model as it runs), and the output shape of
every stage.

Parameter arithmetic with the paper's widths (stem 32; stacks 64/128/256 x 2 blocks; 1 input channel):
    shared 3x3 convs      9 * sum(C_in * C_out) over the 13 convs                      = 2,709,792
    shared attention      W 256x256 + b 256 + u 256                                    =    66,048
    per-corpus adapters   sum(C_in * C_out) over the same 13 convs                     =   301,088
    per-corpus BNs        2 * (32 + 4*64 + 4*128 + 4*256 + 256)                         =     4,160
    per-corpus head       FC 256*h + h, BN 2h, out h*K + K  (h = 32, K = 4)             =     8,420
so one 4-class corpus is 2,775,840 shared + 313,668 own = 3,089,508 parameters, and 26 corpora are
(2,775,840 + 26 * 313,668) / 3,089,508 = 3.54 times that. Adapters and BNs alone already give 3.48x, so
the head (hidden units) is the only knob: hidden 64 gives 3.60x, 128 (the original code's 256 // 2) 3.72x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..config import ModelConfig
from .build import EmoNet, build_model

PAPER_CORPORA = 26


def _part(name: str, shared: bool) -> str:
    if name.startswith("heads."):
        return "head"
    if name.startswith("pooling."):
        return "pooling"
    if shared:
        return "convs"
    return "adapters" if ".adapters." in name else "batchnorms"


def parameter_counts(model: EmoNet, corpus: str) -> dict:
    """``{"shared": {part: n, "total": n}, "per_corpus": {part: n, "total": n}}`` for one corpus of ``model``."""
    out: dict[str, dict[str, int]] = {"shared": {}, "per_corpus": {}}
    for name, p in model.named_shared_parameters():
        out["shared"][_part(name, True)] = out["shared"].get(_part(name, True), 0) + p.numel()
    for name, p in model.named_corpus_parameters(corpus):
        out["per_corpus"][_part(name, False)] = out["per_corpus"].get(_part(name, False), 0) + p.numel()
    for d in out.values():
        d["total"] = sum(d.values())
    return out


def _stage_hooks(model: EmoNet, shapes: dict[str, tuple]) -> list:
    def hook(label: str):
        def record(_mod, _inp, out):
            shapes[label] = tuple((out[0] if isinstance(out, tuple) else out).shape)
        return record

    targets = [("log-mel", model.frontend), ("stem", model.backbone.stem)]
    targets += [(f"stack{i + 1}", stack[-1]) for i, stack in enumerate(model.backbone.stacks)]
    targets += [("backbone", model.backbone)]
    return [m.register_forward_hook(hook(label)) for label, m in targets]


def _flops(model: EmoNet, corpus: str, seconds: float, train: bool, shapes: dict | None = None) -> int:
    # Train mode needs B >= 2 (the head's BatchNorm1d); forward counts use B = 1.
    batch = 2 if train else 1
    samples = int(round(seconds * model.cfg.frontend.sample_rate))
    waves = torch.randn(batch, samples) * 0.1
    lengths = torch.full((batch,), samples, dtype=torch.long)
    model.train(train)
    hooks = _stage_hooks(model, shapes) if shapes is not None else []
    try:
        with FlopCounterMode(display=False) as counter:
            if train:
                logits = model(waves, lengths, corpus, labels=torch.zeros(batch, dtype=torch.long))
                F.cross_entropy(logits, torch.zeros(batch, dtype=torch.long)).backward()
            else:
                with torch.no_grad():
                    pooled = model.embed(waves, lengths, corpus)
                    logits = model.heads[model.corpus_info(corpus).key](pooled)
                if shapes is not None:
                    shapes.update({"waves": tuple(waves.shape), "pooled": tuple(pooled.shape),
                                   "logits": tuple(logits.shape)})
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops() // batch


def summarize(cfg: ModelConfig, corpora: int = 1, num_classes: int = 4, seconds: float = 3.0,
              kind: str = "emotion") -> tuple[str, dict]:
    """Text and dict describing the model for ``cfg`` with ``corpora`` corpora of ``num_classes`` classes.

    FLOPs are counted for one utterance of ``seconds`` seconds and reported per second of audio.
    """
    if corpora < 1:
        raise ValueError("corpora must be >= 1")
    model = build_model(cfg)
    model.add_corpus("corpus1", num_classes, kind=kind)
    counts = parameter_counts(model, "corpus1")
    shared, own = counts["shared"]["total"], counts["per_corpus"]["total"]
    total = lambda n: shared + n * own  # noqa: E731

    shapes: dict[str, tuple] = {}
    fwd = _flops(model, "corpus1", seconds, train=False, shapes=shapes)
    step = _flops(model, "corpus1", seconds, train=True)
    data = {
        "config": {"stem_width": cfg.stem_width, "stack_widths": list(cfg.stack_widths),
                   "blocks_per_stack": cfg.blocks_per_stack, "adapters": cfg.adapters,
                   "pooling": cfg.pooling.kind, "pooling_shared": cfg.pooling.shared, "head_hidden": cfg.head.hidden},
        "num_classes": num_classes,
        "parameters": {**counts, "one_corpus": total(1), "corpora": corpora, "n_corpora": total(corpora),
                       "ratio_n_vs_1": total(corpora) / total(1), "paper_corpora": PAPER_CORPORA,
                       "paper_total": total(PAPER_CORPORA), "ratio_paper_vs_1": total(PAPER_CORPORA) / total(1)},
        "flops_per_second": {"forward": fwd / seconds, "train_step": step / seconds, "seconds": seconds},
        "shapes": shapes,
    }
    return _render(data), data


def _render(d: dict) -> str:
    c, p, f = d["config"], d["parameters"], d["flops_per_second"]

    def row(label: str, value: str, note: str = "") -> str:
        return f"  {label:<26}{value:>12}" + (f"   ({note})" if note else "")

    def parts(group: dict) -> str:
        return "; ".join(f"{k} {v:,}" for k, v in group.items() if k != "total")

    lines = [
        f"EmoNet: stem {c['stem_width']}, stacks {tuple(c['stack_widths'])} x {c['blocks_per_stack']} blocks, "
        f"adapters {'on' if c['adapters'] else 'off'}, {c['pooling']} pooling "
        f"({'shared' if c['pooling_shared'] else 'per corpus'}), head hidden {c['head_hidden']}",
        "Parameters",
        row("shared", f"{p['shared']['total']:,}", parts(p["shared"])),
        row(f"per corpus ({d['num_classes']} classes)", f"{p['per_corpus']['total']:,}", parts(p["per_corpus"])),
        row("1 corpus", f"{p['one_corpus']:,}"),
    ]
    if p["corpora"] not in (1, p["paper_corpora"]):
        lines.append(row(f"{p['corpora']} corpora", f"{p['n_corpora']:,}",
                         f"{p['ratio_n_vs_1']:.2f}x a 1-corpus model"))
    lines.append(row(f"{p['paper_corpora']} corpora", f"{p['paper_total']:,}",
                     f"{p['ratio_paper_vs_1']:.2f}x a 1-corpus model; the paper reports 3.5x"))
    lines += [
        f"Compute per second of 16 kHz audio (counted on a {f['seconds']:g} s utterance)",
        row("forward", f"{f['forward'] / 1e9:.3f}", "GFLOP"),
        row("train step (fwd + bwd)", f"{f['train_step'] / 1e9:.3f}", "GFLOP"),
        "Output shapes (batch 1)",
    ]
    stacks = [k for k in d["shapes"] if k.startswith("stack")]
    for stage in ["waves", "log-mel", "stem", *stacks, "backbone", "pooled", "logits"]:
        if stage in d["shapes"]:
            lines.append(f"  {stage:<26}{d['shapes'][stage]}")
    return "\n".join(lines)
