"""Names are identifiers, not paths; `corpus prepare` loses no file without saying which and why.

Issue 14, rows 2 (path-like corpus names) and 3 (unreadable folders vanish; truncated WAVs and files too short
for one STFT window pass as good audio).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emonet_dist.cli import main as cli_main
from emonet_dist.config import CorpusConfig, PrepareConfig, load_config
from emonet_dist.corpora.prepare import prepare_corpus
from emonet_dist.errors import EmonetError
from emonet_testkit import write_tone

NOBODY = 65534
SMALL = PrepareConfig(jobs=1, dev_fraction=0.25, test_fraction=0.25)


def _ravdess(raw: Path, actors=(1, 2, 3, 4), emotions=(1, 3, 5), seconds: float = 0.3) -> list[Path]:
    """A small RAVDESS-layout tree of real audio files."""
    return [write_tone(raw / f"Actor_{a:02d}/03-01-{e:02d}-01-01-01-{a:02d}.wav", seconds)
            for a in actors for e in emotions]


def _reasons(report: dict) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in report["skipped"]}


# [1] names ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("good", ["crema-d", "synth_target", "ravdess", "iemocap.v2", "session1", "A", "x" * 100])
def test_identifiers_are_names(good):
    from emonet_dist.names import check_name

    assert check_name(good, "corpus name") == good


@pytest.mark.parametrize("bad", ["../../x", "/tmp/x", "a/b", "a\\b", ".", "..", ".hidden", "-rf", "_x", "",
                                 "x" * 101, "a b", "ravdess:arousal", "a\nb", None, 3])
def test_paths_and_odd_strings_are_not_names(bad):
    from emonet_dist.names import check_name

    with pytest.raises(EmonetError, match="not a valid name") as err:
        check_name(bad, "corpus name")
    assert "\n" not in str(err.value) and len(str(err.value)) < 200  # one line, short quote of the input


def test_inside_refuses_paths_that_leave_the_root(tmp_path):
    from emonet_dist.names import inside

    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    assert inside(root, "a", "b") == (root / "a" / "b").resolve()
    for parts in (("..", "x"), ("/etc",), ("link",), ("link", "y"), (".",)):
        with pytest.raises(EmonetError, match="does not stay inside"):
            inside(root, *parts)


def test_config_corpus_names_and_partitions_must_be_names():
    assert CorpusConfig("ravdess", task="arousal").domain == "ravdess:arousal"  # derived keys keep their colon
    corpora = "[{name: crema-d}, {name: iemocap, train: [session1], dev: [session2], test: [session3]}]"
    cfg = load_config(None, [f"data.corpora={corpora}"])
    assert [c.name for c in cfg.data.corpora] == ["crema-d", "iemocap"]
    with pytest.raises(EmonetError, match="not a valid name"):
        load_config(None, ["data.corpora=[{name: ../../x}]"])
    with pytest.raises(EmonetError, match="not a valid name"):
        load_config(None, ["data.corpora=[{name: a, test: [/tmp/t]}]"])


def test_prepare_refuses_a_path_as_corpus_name(tmp_path, capsys):
    raw = tmp_path / "raw"
    _ravdess(raw)
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(EmonetError, match="not a valid name"):
        prepare_corpus("ravdess", raw, out, SMALL, name="../../x")
    rc = cli_main(["corpus", "prepare", "ravdess", str(raw), "--out", str(out), "--name", "../../x", "--jobs", "1"])
    assert rc == 2 and "not a valid name" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # refused before anything was written


def test_prepare_refuses_path_like_partitions_from_a_list(tmp_path):
    rows = ["path,label,speaker,partition"]
    for i, part in enumerate(["train", "train", "dev", "../../escape"]):
        write_tone(tmp_path / f"w{i}.wav", 0.3)
        rows.append(f"w{i}.wav,angry,s{i},{part}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(EmonetError, match="partition name '../../escape' is not a valid name"):
        prepare_corpus("csv", tmp_path / "list.csv", tmp_path / "out", PrepareConfig(jobs=1))
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


# [2] prepare loses nothing --------------------------------------------------------------------------------------
def test_truncated_wav_is_reported_as_truncated(tmp_path):
    raw = tmp_path / "raw"
    _ravdess(raw)
    cut = write_tone(raw / "Actor_01/03-01-04-01-01-01-01.wav", 1.0)
    cut.write_bytes(cut.read_bytes()[:-8000])  # the header still promises 16000 frames
    for check in ("decode", "header"):
        report = prepare_corpus("ravdess", raw, tmp_path / check, PrepareConfig(
            jobs=1, dev_fraction=0.25, test_fraction=0.25, check_audio=check))
        assert _reasons(report)[str(cut)] == "truncated: header promises 16000 frames, the file holds 12000"
        assert report["skipped_by_reason"] == {"truncated": 1}


@pytest.mark.timeout(60)
def test_a_fifo_in_the_tree_is_skipped_not_waited_on(tmp_path):
    raw = tmp_path / "raw"
    _ravdess(raw)
    fifo = raw / "Actor_01/03-01-04-01-01-01-01.wav"
    os.mkfifo(fifo)  # opening it for reading would block until a writer appears
    for check in ("decode", "header"):
        report = prepare_corpus("ravdess", raw, tmp_path / check, PrepareConfig(
            jobs=1, dev_fraction=0.25, test_fraction=0.25, check_audio=check))
        assert _reasons(report)[str(fifo)] == "not a regular file"


def test_files_too_short_for_one_stft_window_are_skipped(tmp_path):
    raw = tmp_path / "raw"
    _ravdess(raw)
    # 511 samples at 16 kHz: one short of a 512-sample window; 256 at 8 kHz resample to exactly 512
    short = raw / "Actor_01/03-01-04-01-01-01-01.wav"
    sf.write(str(short), np.full(511, 0.1, np.float32), 16000)
    just = raw / "Actor_02/03-01-04-01-01-01-02.wav"
    sf.write(str(just), np.full(256, 0.1, np.float32), 8000)
    short8k = raw / "Actor_03/03-01-04-01-01-01-03.wav"
    sf.write(str(short8k), np.full(255, 0.1, np.float32), 8000)
    report = prepare_corpus("ravdess", raw, tmp_path / "out", SMALL)
    reasons = _reasons(report)
    assert reasons[str(short)].startswith("too short: 511 samples at 16000 Hz, one STFT window needs 512")
    assert reasons[str(short8k)].startswith("too short: 510 samples at 16000 Hz")
    assert str(just) not in reasons
    assert report["utterances"] == 13 and report["skipped_count"] == 2
    assert report["skipped_by_reason"] == {"too short": 2}


def _prepare_as_nobody(raw: Path, out: Path) -> tuple[int, str]:
    """Run ``prepare_corpus`` in a forked child that dropped to the ``nobody`` user; returns (status, error).

    A new interpreter cannot be used: this machine's Python lives under /root (mode 0700), which ``nobody``
    cannot enter. The fork inherits every module already imported (the caller warms them up as root first).
    """
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(err_r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            prepare_corpus("ravdess", raw, out, SMALL)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            os.write(err_w, f"{type(exc).__name__}: {exc}".encode()[:4000])
            status = 1
        finally:
            os._exit(status)
    os.close(err_w)
    with os.fdopen(err_r, "rb") as f:
        err = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def test_unreadable_folder_and_file_are_reported_when_run_unprivileged(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the unprivileged user 'nobody' (root itself ignores permission bits)")
    prepare_corpus("ravdess", _ravdess(tmp_path / "warm")[0].parents[1], tmp_path / "warm-out", SMALL)  # imports
    top = Path(tempfile.mkdtemp(dir="/tmp", prefix="emonet-perm-"))  # pytest's tmp dirs are root-only
    try:
        os.chmod(top, 0o777)
        raw = top / "raw"
        _ravdess(raw, actors=(1, 2, 3, 4, 5))
        hidden = raw / "Actor_05"
        os.chmod(hidden, 0o700)  # root's folder: nobody cannot list it
        locked = raw / "Actor_01/03-01-01-01-01-01-01.wav"
        os.chmod(locked, 0o600)
        status, err = _prepare_as_nobody(raw, top / "out")
        assert status == 0, err
        report = json.loads((top / "out" / "report.json").read_text())
        reasons = _reasons(report)
        assert reasons[str(hidden)].startswith("permission denied: cannot list the folder")
        assert reasons[str(locked)].startswith("permission denied: cannot read the file")
        assert report["utterances"] == 11 and report["skipped_count"] == 2
        assert report["skipped_by_reason"] == {"permission denied": 2}
    finally:
        shutil.rmtree(top, ignore_errors=True)
