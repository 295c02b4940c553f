"""Training modes: what trains, what stays bit-identical (acceptance 5), frozen BatchNorms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emonet_dist.errors import EmonetError
from emonet_dist.model.build import build_model
from emonet_dist.model.modes import set_mode, trainable_parameters


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _sgd_steps(model, groups, corpus, make_waves, steps=2):
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-3)
    waves, lengths, _ = make_waves([6000, 4000, 5000, 3000], seed=3)
    labels = torch.tensor([0, 1, 2, 1])
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(waves, lengths, corpus), labels).backward()
        opt.step()


def test_adapters_mode_trains_only_its_corpus(tiny_cfg, randomized, make_waves):
    model = randomized(build_model(tiny_cfg(), {"A": 3, "B": 3}))
    groups = set_mode(model, "adapters", "B")
    assert [g["name"] for g in groups] == ["corpus:B"]
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.corpus_parameters("B")}
    before = _snapshot(model)
    _sgd_steps(model, groups, "B", make_waves)
    after = model.state_dict()
    own = {n for n, _ in model.named_corpus_parameters("B")} | set(model.corpus_buffers("B"))
    for k in before:
        if k in own:
            continue
        assert torch.equal(before[k], after[k]), f"{k} changed in adapters mode for B"
    # B itself did train: adapters, BN affine and BN running statistics all moved.
    assert not torch.equal(before["backbone.stem.adapters.B.weight"], after["backbone.stem.adapters.B.weight"])
    key = "backbone.stacks.0.0.conv1.bns.B.weight"
    assert not torch.equal(before[key], after[key])
    assert not torch.equal(before["backbone.final_bn.B.running_mean"], after["backbone.final_bn.B.running_mean"])
    assert not torch.equal(before["heads.B.out.weight"], after["heads.B.out.weight"])


def test_head_mode_freezes_the_backbone_and_its_batchnorm_statistics(tiny_cfg, randomized, make_waves):
    model = randomized(build_model(tiny_cfg(), {"src": 3}))
    with torch.no_grad():
        for bn in model.corpus_batchnorms("src").values():
            bn.num_batches_tracked.fill_(10)  # as if pretrained
    model.add_corpus("new", 3, init_from="src")
    groups = set_mode(model, "head", "new")
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.heads["new"].parameters()}
    assert trainable_parameters(model) == sum(p.numel() for p in model.heads["new"].parameters())
    before = _snapshot(model)
    _sgd_steps(model, groups, "new", make_waves)  # calls model.train(): frozen BNs must stay in eval
    after = model.state_dict()
    backbone_bns = [n for n in model.corpus_batchnorms("new") if not n.startswith("heads.")]
    assert backbone_bns and all(not model.get_submodule(n).training for n in backbone_bns)
    assert model.heads["new"].bn.training
    for k in before:
        if not k.startswith("heads.new."):
            assert torch.equal(before[k], after[k]), f"{k} changed in head mode"
    assert not torch.equal(before["heads.new.bn.running_mean"], after["heads.new.bn.running_mean"])


def test_head_mode_refuses_a_backbone_that_never_saw_data(tiny_cfg):
    model = build_model(tiny_cfg(), {"a": 3})
    with pytest.raises(EmonetError, match="init_from"):
        set_mode(model, "head", "a")


def test_zero_shared_mode_zeroes_and_freezes_the_shared_convs(tiny_cfg, randomized, make_waves):
    model = randomized(build_model(tiny_cfg(), {"A": 3, "B": 3}))
    shared_before = {n: p.detach().clone() for n, p in model.named_shared_parameters()}
    groups = set_mode(model, "zero-shared", "B")
    _sgd_steps(model, groups, "B", make_waves)
    for n, p in model.named_shared_parameters():
        if n.startswith("backbone."):
            assert (p == 0).all() and not p.requires_grad, n
        else:  # the shared attention pooling is kept (frozen), as in adapters mode
            assert torch.equal(p, shared_before[n]) and not p.requires_grad, n
    assert model.backbone.stem.adapters["B"].weight.abs().sum() > 0  # adapters alone carry the function
    waves, lengths, _ = make_waves([5000, 3000])
    assert torch.isfinite(model.eval()(waves, lengths, "B")).all()


def test_scratch_and_finetune_groups(tiny_cfg):
    model = build_model(tiny_cfg(), {"A": 3, "B": 4})
    groups = set_mode(model, "scratch")
    assert [g["name"] for g in groups] == ["shared", "corpus:A", "corpus:B"]
    assert all(p.requires_grad for p in model.parameters())
    groups = set_mode(model, "finetune", "A")
    assert [g["corpus"] for g in groups] == [None, "A"]
    assert not any(p.requires_grad for p in model.corpus_parameters("B"))
    assert all(p.requires_grad for p in model.shared_parameters())
    assert model.frozen_batchnorms == ()


def test_mode_errors(tiny_cfg):
    model = build_model(tiny_cfg(), {"A": 3})
    with pytest.raises(EmonetError, match="unknown model mode"):
        set_mode(model, "lora", "A")
    with pytest.raises(EmonetError, match="corpus=<name>"):
        set_mode(model, "adapters")
    with pytest.raises(EmonetError, match="not in the model"):
        set_mode(model, "adapters", "Z")
    plain = build_model(tiny_cfg(adapters=False), {"A": 3})
    with pytest.raises(EmonetError, match="adapters=false"):
        set_mode(plain, "adapters", "A")


def test_a_list_of_corpora_trains_each_of_them(tiny_cfg):
    model = build_model(tiny_cfg(), {"A": 3, "B": 4, "C": 2})
    groups = set_mode(model, "adapters", ["A", "C"])
    assert [g["corpus"] for g in groups] == ["A", "C"]
    assert not any(p.requires_grad for p in model.corpus_parameters("B"))
    assert not any(p.requires_grad for p in model.shared_parameters())
    groups = set_mode(model, "scratch", ["B"])
    assert [g["name"] for g in groups] == ["shared", "corpus:B"]
