"""Model compute efficiency: train-step FLOP/s of EmoNet versus a dense fp32 matmul, in the same run.

    /work/venv/bin/python bench/bench_model_flops.py                     # default config, batch 16, 3 s
    /work/venv/bin/python bench/bench_model_flops.py --variants emonet,plain,emonet-nchw --repeats 10
    /work/venv/bin/python bench/bench_model_flops.py --smoke-test       # tiny, seconds

FLOPs per train step (forward + backward) are counted once with ``torch.utils.flop_counter.FlopCounterMode``
on the model as executed (so the fused adapters count as the one 3x3 conv they run as; the STFT, BN, ReLU,
masking and the optimiser count nothing but take time). A step is zero_grad, forward, cross-entropy,
backward and an SGD step (momentum 0.9, weight decay 1e-6).

The machine is shared, so throughput is noisy: each round times a matmul of ``--matmul`` x ``--matmul`` and
then one train step of every variant, back to back. The ratio reported is best step FLOP/s over best matmul
FLOP/s across rounds (the least-disturbed measurements of each), and the spread is the range of the per-round
ratios. Target: >= 0.8 for ``emonet``.

Variants: ``emonet`` (the config given, default: fused adapters, channels_last), ``emonet-nchw``,
``emonet-unfused``, ``emonet-compiled`` (torch.compile of the train step's forward), and ``plain``: a plain
eager ResNet of the same shape (nn.Conv2d/BN/ReLU, no adapters, no masking, global average pooling, FC) on
precomputed log-mels, channels_last, as the reference point.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from emonet_dist.config import ModelConfig, load_config
from emonet_dist.model.build import build_model


class PlainBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        h = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        s = F.avg_pool2d(x, 2, ceil_mode=True) if self.stride == 2 else x
        if self.extra:
            s = F.pad(s, (0, 0, 0, 0, 0, self.extra))
        return F.relu(h + s)


class PlainResNet(nn.Module):
    """The same stem/stacks/final BN as EmoNet, without adapters or masks, GAP + FC head. (B, 1, F, T) -> (B, K)."""

    def __init__(self, cfg: ModelConfig, classes: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, cfg.stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(cfg.stem_width)]
        cin = cfg.stem_width
        for w in cfg.stack_widths:
            for j in range(cfg.blocks_per_stack):
                layers.append(PlainBlock(cin, w, 2 if j == 0 else 1))
                cin = w
        layers += [nn.BatchNorm2d(cin), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


def matmul_flops_per_s(n: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = time.perf_counter()
    a @ b
    return 2 * n**3 / (time.perf_counter() - t)


def make_step(variant: str, cfg: ModelConfig, batch: int, seconds: float) -> Callable[[], None]:
    samples = int(16000 * seconds)
    waves = torch.randn(batch, samples) * 0.1
    # Mixed lengths as in real batches (half the batch at 70 %), so the padding masks do real work.
    lengths = torch.full((batch,), samples, dtype=torch.long)
    lengths[batch // 2:] = int(samples * 0.7)
    labels = torch.randint(0, 4, (batch,))
    if variant == "plain":
        model: nn.Module = PlainResNet(cfg).to(memory_format=torch.channels_last)
        frontend = build_model(cfg).frontend.eval()
        with torch.no_grad():
            mels = frontend(waves, lengths)[0].contiguous(memory_format=torch.channels_last)
        forward = lambda: model(mels)  # noqa: E731
    else:
        overrides = {"emonet-nchw": dict(channels_last=False), "emonet-unfused": dict(fuse_adapters=False)}
        vcfg = dataclasses.replace(cfg, **overrides.get(variant, {}))
        model = build_model(vcfg, {"corpus": 4})
        fwd = torch.compile(model) if variant == "emonet-compiled" else model
        forward = lambda: fwd(waves, lengths, "corpus")  # noqa: E731
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-6)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(), labels).backward()
        opt.step()

    return step


def count_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="emonet,plain",
                    help="comma list: emonet, emonet-nchw, emonet-unfused, emonet-compiled, plain")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=8, help="measured rounds (after 2 warm-up rounds)")
    ap.add_argument("--matmul", type=int, default=2048, help="matmul size n (n x n @ n x n, fp32)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps the default (all cores)")
    ap.add_argument("--smoke-test", action="store_true", help="tiny model and input, 2 rounds (checks the script)")
    ap.add_argument("overrides", nargs="*", help="model config overrides, e.g. model.channels_last=false")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(None, args.overrides).model
    if args.smoke_test:
        cfg = dataclasses.replace(cfg, stem_width=4, base_width=8)
        args.batch, args.seconds, args.repeats, args.matmul = 4, 0.5, 2, 256
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch} x {args.seconds} s; "
          f"config overrides {args.overrides or 'none'}", flush=True)

    steps = {v: make_step(v, cfg, args.batch, args.seconds) for v in variants}
    flops = {v: count_flops(s) for v, s in steps.items()}
    for _ in range(2):  # warm-up: oneDNN primitive caches, allocator, torch.compile
        matmul_flops_per_s(args.matmul)
        for s in steps.values():
            s()
    mm_rates: list[float] = []
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        mm_rates.append(max(matmul_flops_per_s(args.matmul) for _ in range(3)))
        for v, s in steps.items():
            t = time.perf_counter()
            s()
            rates[v].append(flops[v] / (time.perf_counter() - t))
    best_mm = max(mm_rates)
    print(f"matmul {args.matmul}^3 fp32: best {best_mm / 1e9:.1f} GFLOP/s, "
          f"median {statistics.median(mm_rates) / 1e9:.1f}")
    for v in variants:
        per_round = [r / m for r, m in zip(rates[v], mm_rates)]
        print(f"{v:16s} {flops[v] / 1e9:7.2f} GFLOP/step  best {max(rates[v]) / 1e9:6.1f} GFLOP/s  "
              f"(step {flops[v] / max(rates[v]) * 1e3:6.0f} ms)  ratio {max(rates[v]) / best_mm:.3f}  "
              f"per-round ratios {min(per_round):.2f}-{max(per_round):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
