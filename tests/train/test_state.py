"""The loop's explicit state: what a checkpoint's ``state.json`` holds, read back strictly, and the LR schedules as
values (a plateau schedule's epoch gives a new schedule; nothing is updated in place)."""

from __future__ import annotations

import json
import re
from dataclasses import FrozenInstanceError

import pytest

from emonet_dist.errors import ConfigError
from emonet_dist.train.lr import PlateauSchedule, StageSchedule, make_schedule
from emonet_dist.train.state import Best, Position, Throughput, TrainState


def _through_json(state: TrainState, **extra) -> dict:
    """What a checkpoint writes and a restart reads: ``state.json`` (the checkpoint adds the run's config)."""
    return json.loads(json.dumps({**state.to_dict(), **extra}))


def test_state_survives_state_json_exactly():
    plateau, _ = PlateauSchedule(patience=2, stages=3).end_epoch(0.25)
    state = TrainState(step=7, positions={"synth2": Position(epoch=1, batch=3), "synth4": Position(0, 7)},
                       best={"synth2": Best(dev_uar=0.5, step=4, test_uar=0.375), "synth4": Best(0.25, 6)},
                       plateau=plateau, last_eval={"dev_uar/synth2": 0.5, "dev_uar_mean": 0.375})
    back = TrainState.from_dict(_through_json(state, config={"name": "run"}))
    assert back == state and back.step == 7 and back.plateau.best == 0.25
    fresh = PlateauSchedule(patience=2, stages=3)  # best = -inf, which JSON spells -Infinity
    assert TrainState.from_dict(_through_json(TrainState(plateau=fresh))).plateau == fresh


def test_a_state_json_written_before_the_state_was_typed_still_resumes():
    """The dict the loop used to save: no last_eval before the first evaluation, no test_uar without a test set."""
    old = {"step": 4, "positions": {"synth2": {"epoch": 0, "batch": 4}},
           "best": {"synth2": {"dev_uar": 0.5, "step": 4, "test_uar": 0.25}, "synth4": {"dev_uar": 0.3, "step": 2}},
           "plateau": None, "config": {"name": "tiny"}}
    state = TrainState.from_dict(old)
    assert state.positions == {"synth2": Position(epoch=0, batch=4)} and state.last_eval is None
    assert state.best["synth2"].test_uar == 0.25 and state.best["synth4"].test_uar is None


@pytest.mark.parametrize("edit, message", [
    ({"step": "4"}, "step: expected int"),
    ({"positions": {"synth2": {"epoch": 0, "batch": 1.5}}}, "positions.synth2.batch: expected int"),
    ({"best": {"synth2": {"dev_uar": 0.5}}}, "missing required config key 'best.synth2.step'"),
    ({"plateau": {"patience": 2, "stages": 3, "sneaky": 1}}, "plateau: expected"),
    ({"last_eval": {"dev_uar_mean": "high"}}, "last_eval: expected"),
    ({"rng": [1, 2, 3]}, "unknown config key 'rng'"),
])
def test_a_state_json_that_does_not_fit_the_state_is_refused(edit, message):
    """A checkpoint is read strictly, like a config: a wrong type or an unknown key is not half-applied."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainState.from_dict({**TrainState().to_dict(), **edit})


def test_the_state_is_a_value():
    state = TrainState()
    with pytest.raises(FrozenInstanceError):
        state.step = 1
    best = state.with_best("synth2", Best(0.5, 3))
    assert state.best == {} and best.best == {"synth2": Best(0.5, 3)}
    assert best.improves("synth2", 0.6) and not best.improves("synth2", 0.5) and best.improves("synth4", 0.0)


def test_plateau_schedule_epochs_give_new_schedules():
    first = PlateauSchedule(patience=2, stages=2)
    events, s = [], first
    for uar in (0.5, 0.5, 0.4, 0.6, 0.6, 0.6):
        s, event = s.end_epoch(uar)
        events.append(event)
    assert events == ["improved", "same", "drop", "improved", "same", "stop"]
    assert (s.epochs, s.stage, s.best, s.done) == (6, 1, 0.6, True)
    assert first == PlateauSchedule(patience=2, stages=2)  # the first schedule is untouched
    capped, event = PlateauSchedule(patience=5, stages=3, max_epochs=1).end_epoch(0.5)
    assert event == "stop" and capped.done


def test_make_schedule_follows_train_schedule():
    from emonet_dist.config import Config

    cfg = Config().replace({"train.steps_per_stage": 6, "optim.stages": 2})
    assert make_schedule(cfg.train, cfg.optim) == StageSchedule(6, 2)
    single = cfg.replace({"train.schedule": "single", "train.patience": 3, "train.max_epochs": 9})
    assert make_schedule(single.train, single.optim) == PlateauSchedule(patience=3, stages=2, max_epochs=9)


def test_throughput_leaves_out_a_process_s_first_two_steps():
    speed = Throughput(first_step=10)
    for step in range(10, 14):
        speed = speed.add(step, seconds=2.0, utterances=8)
    assert (speed.seconds, speed.utterances) == (4.0, 16)
    assert speed.per_second(world_size=2) == 8.0
    assert Throughput(first_step=0).per_second(2) == 0.0
