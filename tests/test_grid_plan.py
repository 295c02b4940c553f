"""The grid step (issue 16): how a spec's folds × seeds × methods become runs, which partitions each run uses, how many
run at once, and what a grid spec is refused for. The grid running for real: tests/test_grid_smoke.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emonet_dist import typed
from emonet_dist.errors import ConfigError, EmonetError
from emonet_dist.pipeline.grid import cell_values, fold_partitions, plan, reusable, run_config
from emonet_dist.pipeline.parallel import runs_at_once
from emonet_dist.pipeline.spec import GridStep, load_spec
from emonet_dist.pipeline.steps import JobContext
from emonet_dist.runs import Run, absolute_paths

ROOT = Path(__file__).resolve().parents[1]


def _spec(tmp_path, grid: dict, config: dict | None = None):
    config = config or {"name": "g", "output_dir": str(tmp_path / "runs"),
                        "data": {"shards": str(tmp_path / "shards"), "corpora": [{"name": "a"}, {"name": "b"}]}}
    path = tmp_path / "grid.job.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "config": config, "steps": [{"id": "grid", "run": "grid", **grid}]}))
    return load_spec(path)


METHODS = {"scratch": [{"id": "s", "run": "train", "overrides": ["train.schedule=single"]}],
           "adapters": [{"id": "pre", "run": "train"}, {"id": "to-a", "run": "transfer", "from": "pre", "corpus": "a",
                                                        "mode": "adapters"},
                        {"id": "to-b", "run": "transfer", "from": "pre", "corpus": "b", "mode": "adapters"}],
           "svm": [{"id": "svm", "run": "baseline", "corpora": ["a", "b"]}]}


@pytest.mark.parametrize("k", [3, 4, 5])
def test_the_folds_rotate_so_each_is_tested_once_and_never_trained_on_in_its_cell(k):
    tests = []
    for i in range(1, k + 1):
        p = fold_partitions(k, i, "next")
        assert p["dev"] == [f"fold{i % k + 1}"] and len(p["test"]) == 1 and len(p["train"]) == k - 2
        assert not set(p["test"]) & set(p["train"] + p["dev"]) and not set(p["dev"]) & set(p["train"])
        tests += p["test"]
    assert sorted(tests) == sorted(f"fold{i}" for i in range(1, k + 1))
    p = fold_partitions(2, 1, "train")
    assert p == {"train": ["fold2"], "dev": ["fold2"], "test": ["fold1"]}


@pytest.mark.parametrize("k, n", [(4, 1), (5, 1), (5, 2), (6, 3)])
def test_fewer_training_folds_keep_the_cells_test_and_dev_folds_and_take_each_fold_equally_often(k, n):
    """``train_folds`` (a data-size learning curve): a subset of the cell's training folds, the first n after the dev
    fold; over the K cells every fold trains the same number of times, so no fold's speakers weigh more."""
    used = []
    for i in range(1, k + 1):
        full, fewer = fold_partitions(k, i, "next"), fold_partitions(k, i, "next", n)
        assert (fewer["test"], fewer["dev"]) == (full["test"], full["dev"])
        assert len(fewer["train"]) == n and set(fewer["train"]) <= set(full["train"])
        assert fewer["train"] == sorted(fewer["train"], key=lambda f: int(f[4:]))  # fold order, as without n
        used += fewer["train"]
    assert sorted(used) == sorted(f"fold{j}" for j in range(1, k + 1) for _ in range(n))
    assert fold_partitions(k, 2, "next", k - 2) == fold_partitions(k, 2, "next")  # all of them: unchanged


def test_a_grid_plans_every_fold_seed_and_method_and_a_deterministic_baseline_once_per_fold(tmp_path):
    spec = _spec(tmp_path, {"folds": 3, "seeds": [0, 7], "methods": METHODS, "baseline": "scratch"})
    (step,) = spec.steps
    chains = plan(step, spec.config)
    assert len(chains) == 3 * 2 * 2 + 3  # scratch and adapters per fold and seed; svm per fold
    names = [n for c in chains for n in c.names]
    assert len(set(names)) == len(names) and "g-grid-adapters-to-b-s7-fold3" in names
    adapters = next(c for c in chains if c.method == "adapters")
    assert adapters.leaves == ("to-a", "to-b")  # the pretraining run's predictions are not the method's
    assert {c.seed for c in chains if c.method == "svm"} == {0}
    # a run's config: the cell's seed and fold partitions for every corpus, typed (not string overrides)
    ctx = JobContext(spec, spec.config, {})
    chain = next(c for c in chains if c.method == "scratch" and c.seed == 7 and c.fold == 3)
    cfg = run_config(ctx, step, chain, chain.steps[0], chain.names[0], {})
    assert (cfg.name, cfg.seed, cfg.data.seed, cfg.train.schedule) == (chain.names[0], 7, 7, "single")
    assert {(c.name, c.train, c.dev, c.test) for c in cfg.data.corpora} == {
        (n, ("fold2",), ("fold1",), ("fold3",)) for n in ("a", "b")}
    svm = next(c for c in chains if c.method == "svm")
    assert [c["name"] for c in cell_values(spec.config, step, svm, "x", ["b"])["data.corpora"]] == ["b"]


def test_runs_at_once_is_what_the_cluster_holds_of_the_largest_run():
    assert runs_at_once({"CPU": 2.0}, {"CPU": 2.0}, 0, 8) == 1  # this machine, 2-worker runs: one at a time
    assert runs_at_once({"CPU": 1.0}, {"CPU": 2.0}, 0, 8) == 2
    assert runs_at_once({"CPU": 4.0, "GPU": 2.0}, {"CPU": 64.0, "GPU": 8.0}, 0, 30) == 4  # the GPUs bound it
    assert runs_at_once({"CPU": 1.0}, {"CPU": 16.0}, 3, 8) == 3 and runs_at_once({"CPU": 1.0}, {"CPU": 16.0}, 0, 2) == 2
    assert runs_at_once({"CPU": 8.0}, {"CPU": 2.0}, 0, 8) == 1  # too big for the cluster: Ray's wait says so


@pytest.mark.parametrize("grid, message", [
    ({"folds": 1, "methods": METHODS}, "folds must be at least 2"),
    ({"folds": 2, "methods": METHODS}, "dev: next needs at least 3 folds"),
    ({"folds": 3, "seeds": [1, 1], "methods": METHODS}, "distinct seeds"),
    ({"folds": 3, "methods": {"scratch": METHODS["scratch"]}}, "at least two methods"),
    ({"folds": 3, "methods": METHODS, "baseline": "nope"}, "baseline .?nope.? is not one of the methods"),
    ({"folds": 3, "methods": {**METHODS, "../x": METHODS["svm"]}}, "method"),
    ({"folds": 3, "methods": {**METHODS, "t": [{"id": "t", "run": "tune", "space": {}}]}},
     "train, transfer or baseline"),
    ({"folds": 3, "methods": {**METHODS, "t": [{"id": "t", "run": "transfer", "from": "s", "corpus": "a",
                                                "mode": "adapters"}]}}, "from: an earlier"),  # another method's step
    ({"folds": 3, "methods": METHODS, "max_parallel": -1}, "max_parallel"),
    ({"folds": 3, "methods": METHODS, "shuffle": True}, "unknown key"),
    ({"folds": 3, "methods": METHODS, "train_folds": {"nope": 1}}, "train_folds names .?nope.?, which is not"),
    ({"folds": 4, "methods": METHODS, "train_folds": {"scratch": 3}}, "from 1 to 2 .*got .?3"),
    ({"folds": 4, "dev": "train", "methods": METHODS, "train_folds": {"svm": 0}}, "from 1 to 3 .*got .?0"),
    ({"folds": 4, "methods": METHODS, "train_folds": {"svm": "all"}}, "train_folds.svm: expected int"),
])
def test_a_bad_grid_is_refused_when_the_spec_loads(tmp_path, grid, message):
    with pytest.raises(ConfigError, match=message):
        _spec(tmp_path, grid)


def test_a_grid_spec_round_trips_through_what_submit_ships(tmp_path):
    spec = _spec(tmp_path, {"folds": 3, "methods": METHODS})
    shipped = tmp_path / "shipped.job.yaml"
    shipped.write_text(yaml.safe_dump(spec.to_dict()))
    again = load_spec(shipped)
    assert again.steps == spec.steps and isinstance(again.steps[0], GridStep)


def test_a_finished_run_is_reused_only_with_the_config_it_was_planned_with(tmp_path):
    spec = _spec(tmp_path, {"folds": 3, "methods": METHODS})
    (step,) = spec.steps
    ctx = JobContext(spec, spec.config, {})
    chain = plan(step, spec.config)[0]
    cfg = run_config(ctx, step, chain, chain.steps[0], chain.names[0], {})
    assert reusable(cfg, chain.names[0]) is None  # nothing there yet
    run = Run.create(absolute_paths(cfg.replace({"tracking.enabled": False})), chain.names[0])
    run.finish(True, metrics={"test_uar": 0.5})
    assert reusable(cfg, chain.names[0]).metrics == {"test_uar": 0.5}  # tracking settings may differ
    with pytest.raises(EmonetError, match="exists with another config .*optim.lr"):
        reusable(cfg.replace({"optim.lr": 0.5}), chain.names[0])
    (run.dir / "run.json").unlink()  # killed while it was being created: started again
    assert reusable(cfg, chain.names[0]) is None and not run.dir.exists()


def test_the_real_corpus_experiment_is_a_grid_of_4_folds_2_seeds_and_the_issues_methods():
    """jobs/realdata_grid.job.yaml (docs/results.md): RAVDESS, EMOVO and URDU in 4 speaker-group folds x 2 seeds;
    eGeMAPS, scratch, all-corpus and leave-one-corpus-out adapters, joint round-robin and joint temperature."""
    spec = load_spec(ROOT / "jobs" / "realdata_grid.job.yaml")
    (grid,) = [s for s in spec.steps if isinstance(s, GridStep)]
    assert (grid.folds, grid.seeds, grid.baseline) == (4, (0, 1), "scratch")
    assert spec.config.prepare.split == "folds" and spec.config.prepare.num_folds == 4
    assert set(grid.methods) == {"egemaps", "scratch", "all", "loco", "joint", "joint_t"}
    chains = plan(grid, spec.config)
    assert len(chains) == 4 * 2 * 5 + 4  # eGeMAPS + SVM is deterministic: once per fold
    ctx = JobContext(spec=spec, config=spec.config, tags={})
    sampling = {}
    for chain in (c for c in chains if c.seed == 1 and c.fold == 4):
        done = {}
        for sub, name in zip(chain.steps, chain.names):
            if sub.run == "transfer":
                continue  # its config comes from the pretraining run's directory
            cfg = run_config(ctx, grid, chain, sub, name, done)
            assert cfg.seed == cfg.data.seed == 1
            for c in cfg.data.corpora:  # tests fold 4, selects on fold 1, trains on folds 2 and 3
                assert (c.test, c.dev, c.train) == (("fold4",), ("fold1",), ("fold2", "fold3")), (name, c)
            if chain.method in ("joint", "joint_t"):
                sampling[chain.method] = (cfg.train.corpus_sampling, [c.name for c in cfg.data.corpora])
        if chain.method == "loco":
            held_out = [s.corpus for s in chain.steps if s.run == "transfer"]
            assert held_out == ["ravdess", "emovo", "urdu"]
    assert sampling == {"joint": ("round_robin", ["ravdess", "emovo", "urdu"]),
                        "joint_t": ("temperature", ["ravdess", "emovo", "urdu"])}


@pytest.mark.parametrize("job, base, variant, differs", [
    ("realdata_curves", "scratch", "scratch_3s", {"data.max_seconds": 3.0}),
    ("realdata_norm", "scratch", "scratch_norm", {"model.frontend.normalize": "utterance"}),
    ("realdata_specaug", "scratch_3s", "scratch_3s_specaug", {"model.specaugment": "conservative"}),
])
def test_the_follow_up_experiments_change_only_what_docs_results_says(job, base, variant, differs):
    """docs/results.md's follow-ups: the grid's cells (seed 0, 4 folds) with one setting changed between two methods
    (the curves job, and the SpecAugment job that extends it, also lift the epoch cap to 18 for both)."""
    grid_spec = load_spec(ROOT / "jobs" / "realdata_grid.job.yaml")
    spec = load_spec(ROOT / "jobs" / f"{job}.job.yaml")
    (grid,) = [s for s in spec.steps if isinstance(s, GridStep)]
    assert (grid.folds, grid.seeds, grid.baseline, set(grid.methods)) == (4, (0,), base, {base, variant})
    cap = {} if job == "realdata_norm" else {"train.max_epochs": 18}
    assert spec.config == grid_spec.config.replace({"name": spec.config.name, **cap})
    ctx = JobContext(spec=spec, config=spec.config, tags={})
    configs = {}
    for chain in plan(grid, spec.config):
        for sub, name in zip(chain.steps, chain.names):
            configs[(chain.method, chain.fold, sub.id)] = run_config(ctx, grid, chain, sub, name, {})
    assert len(configs) == 2 * 4 * 3  # two methods x 4 folds x 3 corpora
    for (method, fold, corpus), cfg in configs.items():
        if method == variant:
            assert cfg == configs[(base, fold, corpus)].replace(differs).replace({"name": cfg.name})


def _planned(job: str) -> dict[tuple[str, int, str], tuple[str, object]]:
    """A job spec's grid runs: (method, fold, step id) -> (run name, run config), as the runner would plan them."""
    spec = load_spec(ROOT / "jobs" / f"{job}.job.yaml")
    (grid,) = [s for s in spec.steps if isinstance(s, GridStep)]
    ctx = JobContext(spec=spec, config=spec.config, tags={})
    return {(chain.method, chain.fold, sub.id): (name, run_config(ctx, grid, chain, sub, name, {}))
            for chain in plan(grid, spec.config) for sub, name in zip(chain.steps, chain.names)}


def test_the_specaugment_follow_up_reuses_the_curves_jobs_unaugmented_runs():
    """Same config name and method, so the same run names and configs: the grid's resume reuses them."""
    curves, specaug = ({k: v for k, v in _planned(j).items() if k[0] == "scratch_3s"}
                       for j in ("realdata_curves", "realdata_specaug"))
    assert len(specaug) == 12 and specaug == curves


def test_the_data_size_follow_up_differs_only_in_training_folds_and_reuses_the_curves_jobs_scratch_runs():
    """jobs/realdata_datasize.job.yaml (docs/results.md): each *_1fold method is its full-data method on one of the
    cell's two training folds, nothing else; its scratch runs are the curves job's (same names and configs)."""
    curves, size = _planned("realdata_curves"), _planned("realdata_datasize")
    def scratch(runs):
        return {k: v for k, v in runs.items() if k[0] == "scratch"}

    assert len(scratch(size)) == 12 and scratch(size) == scratch(curves)
    assert len(size) == 4 * (3 + 3 + 1 + 1)
    for (method, fold, sid), (_, cfg) in size.items():
        if method.endswith("_1fold"):
            full = size[(method.removesuffix("_1fold"), fold, sid)][1]
            for mine, theirs in zip(cfg.data.corpora, full.data.corpora, strict=True):
                assert (mine.test, mine.dev) == (theirs.test, theirs.dev) and len(theirs.train) == 2
                assert list(mine.train) == fold_partitions(4, fold, "next", 1)["train"]
            same_folds = [{**typed.to_dict(m), "train": list(t.train)} for m, t in zip(cfg.data.corpora,
                                                                                       full.data.corpora)]
            assert cfg.replace({"name": full.name, "data.corpora": same_folds}) == full


def test_the_longer_ravdess_schedule_changes_only_patience_and_epochs_and_reuses_the_curves_jobs_runs():
    """jobs/realdata_ravdess_long.job.yaml (docs/results.md): the curves job's RAVDESS scratch_3s runs, reused by name
    and config, against the same with train.patience=4 and train.max_epochs=40."""
    curves, long = _planned("realdata_curves"), _planned("realdata_ravdess_long")
    assert set(long) == {(m, f, "ravdess") for m in ("scratch_3s", "scratch_3s_long") for f in range(1, 5)}
    for fold in range(1, 5):
        name, base = long[("scratch_3s", fold, "ravdess")]
        assert (name, base) == curves[("scratch_3s", fold, "ravdess")]
        longer = long[("scratch_3s_long", fold, "ravdess")][1]
        assert longer == base.replace({"name": longer.name, "train.patience": 4, "train.max_epochs": 40})
