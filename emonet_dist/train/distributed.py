"""The distributed semantics of multi-corpus training, in one place.

Design (chosen over wrapping the model in DDP; DESIGN.md section 3 lists the traps it avoids):

* **Every rank trains the same corpus at the same moment.** The corpus schedule (round-robin or temperature
  sampling) is seeded identically on all ranks, so per-corpus parameters are touched by all ranks together or
  not at all.
* **The loss is normalised globally.** Each rank's loss is its share of the union batch's class-weighted
  mean: ``sum_i w_i * ce_i / W`` with ``W = sum of w_i over all ranks`` (one tiny all-reduce). The gradient of
  the union batch is then the **sum** of the ranks' gradients, for shared and per-corpus parameters alike and
  whichever ranks computed them — so a corpus's gradient is reduced over exactly the ranks that had samples
  of it (a rank with an empty batch contributes zeros, it is not averaged in). Dividing by the world size
  would shrink the step whenever a rank had no samples; the DDP-equivalence test covers that case.
* **BatchNorm statistics are per worker by default, global on request.** By default
  (``ray.sync_batchnorm=false``, PyTorch DDP's choice) each rank normalises with its own batch, and
  :func:`average_batchnorm_stats` makes the running statistics agree before every evaluation and checkpoint.
  With ``ray.sync_batchnorm=true`` every BN (all are per corpus) normalises with the mean and variance of the
  union batch (all-reduced, differentiable), so training is the same computation as one worker on the union
  batch, and the running statistics are updated identically on every rank — they agree at every checkpoint and
  evaluation without broadcasting (``bn_state_digest`` checks this either way).
* **Gradients are summed in buckets while backward runs** (:mod:`~emonet_dist.train.buckets`, as DDP's reducer
  does); :func:`sum_gradients` is the same sum after backward (single-process callers, tests and benchmarks).
* Only parameters that received a gradient are reduced and stepped, so unused corpora's parameters, momentum
  and weight decay are left alone (SGD skips parameters whose ``grad`` is None).

Everything degrades to plain single-process PyTorch when the world size is 1.
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GlobalBN(torch.autograd.Function):
    """BatchNorm over the union batch of all ranks, with one collective in forward and one in backward.

    Forward: per-rank (count, mean, M2) are gathered and combined exactly (Chan et al.), then the fused
    ``batch_norm`` kernel normalises with the global statistics. Backward: the per-channel sums
    ``sum(dy)`` and ``sum(dy * (x - mean))`` come from the fused BN backward kernel and are all-reduced; the
    input gradient is then the union batch's (SyncBatchNorm's formula). Parameter gradients stay local: the
    training loop sums every gradient over ranks afterwards.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, track):
        c = x.shape[1]
        n = x.numel() // max(c, 1)
        # Statistics, the gathered table and the running averages are at least fp32 whatever x is (bf16/fp16
        # under autocast): an fp16 count overflows at 65504, and bf16 means would carry 3 significant digits.
        stats = x.new_zeros(c, dtype=torch.promote_types(x.dtype, torch.float32))
        if n > 0:
            # the fused BN kernel's batch statistics (2-5x faster than torch.var_mean on CPU, channels_last
            # included); its normalised output is discarded. eps=0 gives invstd = 1/sqrt(biased var). An fp32
            # weight makes the kernel accumulate and return fp32 statistics for a low-precision x on CPU too
            # (CUDA always does).
            _, mean_l, invstd_l = torch.native_batch_norm(x.detach(), weight if weight is not None else
                                                          stats + 1, None, None, None, True, 0.0, 0.0)
            mean_l, var_l = mean_l.to(stats.dtype), invstd_l.to(stats.dtype).pow(-2)  # 1/inf**2 = 0: constant channel
        else:
            var_l = mean_l = stats
        _, size = world()
        local = torch.cat([stats.new_full((1,), float(n)), mean_l, var_l * n])
        parts = [torch.empty_like(local) for _ in range(size)]
        dist.all_gather(parts, local)
        table = torch.stack(parts)  # (world, 1 + 2C): count, mean, M2
        counts, means, m2 = table[:, :1], table[:, 1:1 + c], table[:, 1 + c:]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (m2.sum(0) + (counts * (means - mean) ** 2).sum(0)) / total
        invstd = torch.rsqrt(var + eps)
        y = torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, False)
        if track:
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var * (total / (total - 1)).clamp(min=0), alpha=momentum)
        ctx.save_for_backward(x, weight, mean, invstd, total)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, invstd, total = ctx.saved_tensors
        c = x.shape[1]
        dy = dy.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) \
            and x.dim() == 4 else dy.contiguous()
        if x.numel():
            # fused kernel: grad_weight = sum(dy * (x - mean) * invstd), grad_bias = sum(dy), local sums
            _, gw, gb = torch.ops.aten.native_batch_norm_backward(
                dy, x, weight, None, None, mean, invstd, True, 0.0, [False, True, True])
        else:
            gw = gb = x.new_zeros(c)
        sums = torch.cat([gb, gw / invstd])  # sum(dy), sum(dy * (x - mean)), this rank
        dist.all_reduce(sums)
        sum_dy, sum_dy_xmu = sums[:c] / total, sums[c:] / total
        shape = [1, -1] + [1] * (x.dim() - 2)
        w = weight if weight is not None else torch.ones_like(mean)
        a = (w * invstd).view(shape)
        b = (-w * invstd ** 3 * sum_dy_xmu).view(shape)
        cst = -a * sum_dy.view(shape) - b * mean.view(shape)
        dx = torch.addcmul(cst, x, b).addcmul_(dy, a).to(x.dtype)  # fp32 arithmetic, x's dtype under autocast
        return dx, (gw if weight is not None else None), (gb if weight is not None else None), \
            None, None, None, None, None


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the union of all ranks' batches (SyncBatchNorm semantics, on any device and backend).

    torch's SyncBatchNorm only runs on GPUs; this one runs with gloo on CPU and NCCL on GPU. Works for
    ``(B, C)`` and ``(B, C, ...)`` inputs. In eval mode, or with a world size of 1, it is exactly ``nn.BatchNorm``.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        _, size = world()
        if not self.training or size == 1:
            return super().forward(x)
        track = self.track_running_stats
        if track:
            self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return _GlobalBN.apply(x, self.weight, self.bias, self.running_mean, self.running_var, m, self.eps, track)


def use_global_batchnorm(model: nn.Module) -> nn.Module:
    """Turn every ``nn.BatchNorm1d/2d`` in ``model`` into :class:`GlobalBatchNorm` in place (same parameters
    and buffers, same state-dict keys). Call it after all corpora are added."""
    for module in model.modules():
        if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
            module.__class__ = GlobalBatchNorm  # same attributes; only forward changes
    return model


def average_batchnorm_stats(model: nn.Module) -> None:
    """Average every BN running mean and variance over the ranks, in one collective (local-BN training).

    The average of the ranks' variances is what timm's ``distribute_bn`` and most DDP code use; it leaves out the
    spread of the ranks' means, which is small when ranks draw from the same shuffled data."""
    _, size = world()
    if size == 1:
        return
    bufs = [b for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    with torch.no_grad():
        for b in bufs:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()


def global_weighted_ce(logits: Tensor, targets: Tensor, class_weights: Tensor | None) -> Tensor:
    """This rank's share of the union batch's class-weighted mean cross-entropy.

    Summing the returned losses over ranks gives ``F.cross_entropy(all_logits, all_targets, weight=w)``.
    """
    ce = F.cross_entropy(logits, targets, reduction="none")
    w = class_weights[targets] if class_weights is not None else torch.ones_like(ce)
    total = w.sum().detach()
    _, size = world()
    if size > 1:
        total = total.clone()
        dist.all_reduce(total)
    return (w * ce).sum() / total.clamp(min=torch.finfo(ce.dtype).tiny)


def sum_gradients(params: list[nn.Parameter], check: bool = False) -> None:
    """All-reduce (sum) the gradients of ``params`` that have one, in a single flat buffer.

    Every rank must hold gradients for the same parameters (guaranteed because all ranks run the same
    corpus). ``check`` first compares the buffer's size over the ranks and raises on a mismatch instead of
    silently mixing tensors; reading the result is a host synchronisation, so the loop checks on the first
    round of a process (start-up, and after a restore) rather than at every step.
    """
    _, size = world()
    if size == 1:
        return
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])  # fp32 under autocast too: the weights' dtype
    if check:
        check_same_size(flat.numel(), flat.device)
    dist.all_reduce(flat)
    offset = 0
    for p in with_grad:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def check_same_size(numel: int, device: torch.device) -> None:
    """Raise unless every rank passes the same ``numel`` (one collective and one host read)."""
    check = torch.tensor([numel, -numel], dtype=torch.float64, device=device)
    dist.all_reduce(check, op=dist.ReduceOp.MAX)  # (max, -min) of the sizes in one collective
    if check[0].item() != -check[1].item():  # CPU-GPU sync point, at start-up and after a restore only
        raise RuntimeError("ranks computed gradients for different parameters; every rank must train the same "
                           "corpus at the same step (check that all ranks share data.seed and the corpus list)")


def broadcast_state(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (start-up and after a restore)."""
    _, size = world()
    if size == 1:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src)


def bn_state_digest(model: nn.Module) -> str:
    """A hash of every BatchNorm buffer, to check that ranks agree before a checkpoint or an evaluation."""
    h = hashlib.sha256()
    for name, buf in model.named_buffers():
        if "running_" in name or "num_batches_tracked" in name:
            h.update(name.encode())
            h.update(buf.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def assert_ranks_agree(digest: str, what: str) -> None:
    """Raise if ranks hold different values of ``what`` (compared by digest)."""
    _, size = world()
    if size == 1:
        return
    digests: list[str | None] = [None] * size
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"{what} differ between ranks ({digests}); this is a bug in the distributed loop")
