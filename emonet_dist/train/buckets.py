"""Overlapped, bucketed gradient reduction: the gradient sum of :mod:`~.distributed` started during backward.

What PyTorch DDP's reducer does (``torch/csrc/distributed/c10d/reducer.cpp``), kept to our semantics:

* **A static plan per corpus.** Every rank trains the same corpus at each step, so the parameters that receive a
  gradient in a step are the same on every rank and depend only on the corpus (the shared ones, plus that
  corpus's adapters, BatchNorms and head). The plan is found once per corpus and process: the first backward of a
  corpus runs unhooked, the parameters that got a gradient become its plan, and its gradients are reduced after
  backward, exactly as :func:`~.distributed.sum_gradients` does (that step also carries the size check of the
  first round). The plan orders its parameters in reverse registration order (about the order backward produces
  their gradients) and cuts them into buckets of at most ``ray.bucket_mb``; the first bucket holds at most 1 MB
  (DDP's ``_DEFAULT_FIRST_BUCKET_BYTES``) so that a reduction starts early even when a model fits one bucket.
* **Hooks launch buckets in order.** A post-accumulate-grad hook on each parameter counts the bucket's ready
  gradients; when a bucket is complete it is flattened into its buffer and ``all_reduce(async_op=True)`` is
  launched, after every earlier bucket of the plan (buckets launch in plan order on every rank, whatever order
  backward happens to finish them in, so the collectives always match). After backward, :meth:`finish` waits for
  the handles and copies the sums back into ``p.grad``.
* **A gradient that did not come** (None: the parameter took no part in this step) leaves its bucket incomplete.
  :meth:`finish` then reduces, in plan order, the gradients that are there, and any gradient outside the plan last,
  which is exactly today's result: parameters without a gradient are not reduced, not stepped, get no weight decay
  and no momentum. All ranks hold the same gradients, so they take the same path.
* **Own process group.** Bucket reductions run on a group of their own, so their asynchronous collectives never
  interleave with the synchronous ones that global BatchNorm runs inside backward on the default group.
* **fp32.** Buffers take the gradients' dtype, which is the weights' (fp32, also under autocast; fp64 in the
  fp64 tests); the fp16 loss scaler's scaled gradients are summed while scaled, as before. The device comes from
  the gradients: gloo on CPU, NCCL on CUDA, unchanged. No host reads: hooks and :meth:`finish` only queue work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .distributed import check_same_size, world

FIRST_BUCKET_BYTES = 1 << 20
"""DDP's first bucket: small, so that one reduction starts while most of backward is still to run."""


@dataclass
class Bucket:
    """Parameters reduced together, in one flat buffer of their gradients' dtype."""

    params: list[nn.Parameter]
    buffer: Tensor
    ready: int = 0
    """Gradients accumulated in the current step."""


@dataclass
class Plan:
    """One corpus's buckets, in launch order, and which bucket each parameter belongs to."""

    buckets: list[Bucket]
    where: dict[int, int] = field(default_factory=dict)
    """``id(param)`` -> bucket index."""


def plan_buckets(params: list[nn.Parameter], bucket_bytes: int, first_bytes: int = FIRST_BUCKET_BYTES) -> Plan:
    """Cut ``params`` (with gradients, in launch order) into buckets of at most ``bucket_bytes`` (the first at most
    ``first_bytes``); a bucket never mixes dtypes or devices, and a parameter larger than the cap is alone."""
    groups: list[list[nn.Parameter]] = []
    size, cap = 0, min(first_bytes, bucket_bytes)
    for p in params:
        nbytes = p.grad.numel() * p.grad.element_size()
        same = groups and (groups[-1][0].grad.dtype, groups[-1][0].grad.device) == (p.grad.dtype, p.grad.device)
        if not groups or not same or size + nbytes > cap:
            if groups:
                cap = bucket_bytes  # the first bucket is closed
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += nbytes
    buckets = [Bucket(g, torch.empty(sum(p.grad.numel() for p in g), dtype=g[0].grad.dtype, device=g[0].grad.device))
               for g in groups]
    return Plan(buckets, {id(p): i for i, g in enumerate(groups) for p in g})


class GradientBuckets:
    """The summed gradients of ``params`` over the ranks, reduced in buckets while backward runs.

    Use :meth:`reduce` around the backward of one corpus's step (all ranks, the same corpus)::

        with buckets.reduce(corpus, check=first_round):
            loss.backward()
        opt.step()  # every gradient is the sum over the ranks, as after sum_gradients
    """

    def __init__(self, params: list[nn.Parameter], bucket_mb: float, group: dist.ProcessGroup | None = None):
        """``params`` in registration order (backward produces their gradients in about the reverse order);
        ``group``: the process group of the reductions (None: the default group)."""
        self.params = list(params)
        self.bucket_bytes = max(1, int(bucket_mb * 2 ** 20))
        self.group = group
        self.plans: dict[str, Plan] = {}
        self.plan: Plan | None = None
        """The plan of the step under way (None: hooks are idle)."""
        self.next = 0
        """The next bucket of :attr:`plan` to launch (buckets launch in order)."""
        self.works: list[tuple[Bucket, dist.Work, list[nn.Parameter]]] = []
        self.launched_in_backward = 0
        """Buckets the last step launched from hooks, before backward ended (what overlapped)."""
        self.handles = [p.register_post_accumulate_grad_hook(self._ready) for p in self.params]

    @contextlib.contextmanager
    def reduce(self, corpus: str, check: bool = False) -> Iterator[None]:
        """Reduce the gradients of the backward run inside the block (one corpus's step, on every rank).

        ``check`` compares the gradients' size over the ranks first (a host read: the first round of a process);
        such a step, and the first step of each corpus, reduces after backward (no overlap)."""
        plan = self.plans.get(corpus)
        self._start(plan if plan is not None and not check else None)
        try:
            yield
        except BaseException:
            self._drain()
            raise
        self.launched_in_backward = len(self.works)
        if self.plan is None:
            self._after_backward(corpus, check)
        else:
            self.finish()

    def _start(self, plan: Plan | None) -> None:
        self.plan, self.next, self.works = plan, 0, []
        for b in plan.buckets if plan is not None else ():
            b.ready = 0

    def _ready(self, p: nn.Parameter) -> None:
        """Post-accumulate-grad hook: count ``p``'s bucket; launch every complete bucket that is next in line."""
        plan = self.plan
        if plan is None:
            return
        i = plan.where.get(id(p))
        if i is None:  # a gradient outside the plan: reduced in finish()
            return
        plan.buckets[i].ready += 1
        while self.next < len(plan.buckets) and plan.buckets[self.next].ready == len(plan.buckets[self.next].params):
            self._launch(plan.buckets[self.next], plan.buckets[self.next].params)
            self.next += 1

    def _launch(self, bucket: Bucket, params: list[nn.Parameter]) -> None:
        flat = bucket.buffer if len(params) == len(bucket.params) else \
            bucket.buffer[:sum(p.grad.numel() for p in params)]
        torch.cat([p.grad.reshape(-1) for p in params], out=flat)
        self.works.append((bucket, dist.all_reduce(flat, group=self.group, async_op=True), params))

    def finish(self) -> None:
        """After backward: launch what hooks did not (incomplete buckets: the gradients that are there; gradients
        outside the plan), wait for every reduction and copy the sums into ``p.grad``."""
        plan = self.plan
        for bucket in plan.buckets[self.next:]:
            present = [p for p in bucket.params if p.grad is not None]
            if present:
                self._launch(bucket, present)
        extra = [p for p in reversed(self.params) if p.grad is not None and id(p) not in plan.where]
        for bucket in plan_buckets(extra, self.bucket_bytes).buckets if extra else ():  # rare: fresh buffers
            self._launch(bucket, bucket.params)
        self._drain(copy=True)

    def _drain(self, copy: bool = False) -> None:
        works, self.works, self.plan = self.works, [], None
        for bucket, work, params in works:
            work.wait()
            if copy:
                offset = 0
                for p in params:
                    n = p.grad.numel()
                    p.grad.copy_(bucket.buffer[offset:offset + n].view_as(p.grad))
                    offset += n

    def _after_backward(self, corpus: str, check: bool) -> None:
        """An unhooked step: make the corpus's plan from the gradients that came (first step of the corpus), then
        reduce them bucket by bucket after backward: the same sums as :func:`~.distributed.sum_gradients`."""
        with_grad = [p for p in reversed(self.params) if p.grad is not None]
        if check:
            check_same_size(sum(p.grad.numel() for p in with_grad), with_grad[0].grad.device if with_grad else
                            torch.device("cpu"))
        if corpus not in self.plans and with_grad:
            self.plans[corpus] = plan_buckets(with_grad, self.bucket_bytes)
        plan = self.plans.get(corpus)
        if plan is None:
            return
        self._start(plan)
        self.finish()

    def close(self) -> None:
        """Remove the hooks (the parameters then train without them)."""
        for h in self.handles:
            h.remove()
        self.handles = []


def gradient_buckets(model: nn.Module, trainable: list[nn.Parameter], bucket_mb: float) -> GradientBuckets | None:
    """The reducer of ``trainable`` (the optimiser's parameters of ``model``) in a multi-worker run, on a process
    group of its own (every rank must call this together); None with a world size of 1."""
    _, size = world()
    if size == 1:
        return None
    ours = {id(p) for p in trainable}
    ordered = [p for p in model.parameters() if id(p) in ours]  # registration order: plans reverse it
    return GradientBuckets(ordered, bucket_mb, dist.new_group(backend=dist.get_backend()))
