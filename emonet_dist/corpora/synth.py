"""Built-in synthetic emotional-speech corpora: the data of the demo and of the tests.

Each corpus is spoken by procedurally generated speakers (:mod:`.synth_voice`: a source–filter voice with
syllable rhythm) in its own made-up "language" (vowel inventory, consonants, syllable rate and structure),
recorded through its own channel (band limit, noise, reverberation) and labelled with its own label set.
What they share is :data:`EMOTIONS`: one emotion -> prosody table, so an emotion sounds the same way in every
corpus and cross-corpus transfer is meaningful.

The default set (:data:`CORPORA`) holds four training corpora with 7, 5, 4 and 2 classes and one small
transfer target with subtler emotions::

    from emonet_dist.corpora.synth import build_synthetic
    reports = build_synthetic(Path("data/synth"))   # 1354 utterances, 15-30 s on 2 cores

writes ``data/synth/raw/<corpus>/<speaker>/<speaker>_<label>_<nnn>.flac`` (16 kHz mono FLAC) plus a
``corpus.json`` with the speaker and channel metadata, then prepares every corpus with the ``synth`` recipe
into ``data/synth/<corpus>/manifest.jsonl`` and ``report.json``. Every utterance is seeded from
``(seed, corpus, speaker, label, index)``, so the output does not depend on process-pool scheduling.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import scipy.fft as sfft
import soundfile as sf
from scipy.signal import butter, fftconvolve, sosfilt

from ..config import PrepareConfig
from ..errors import CorpusError
from ..progress import Progress
from .prepare import prepare_corpus
from .synth_voice import REF_RMS, SR, Language, Prosody, Speaker, synthesize

try:  # installed with scikit-learn
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    def threadpool_limits(limits=None):
        return contextlib.nullcontext()

# --------------------------------------------------------------------------------------------------------------
# the shared emotion -> prosody table (deviations from neutral; see Prosody for units)
# --------------------------------------------------------------------------------------------------------------
NEUTRAL = Prosody()
EMOTIONS: dict[str, Prosody] = {
    "neutral": NEUTRAL,
    "calm": Prosody(f0_st=-1.5, f0_range=0.75, rate=0.88, gain_db=-3, tilt_db=-2, oq=0.66, aspiration=0.08,
                    pause=1.2),
    "boredom": Prosody(f0_st=-2.5, f0_range=0.45, rate=0.8, gain_db=-4, tilt_db=-3, oq=0.66, aspiration=0.08,
                       jitter=0.012, shimmer=0.06, pause=1.4, final_st=-3.5, formant=0.99),
    "sad": Prosody(f0_st=-2.0, f0_range=0.55, rate=0.72, gain_db=-7, tilt_db=-5, oq=0.74, aspiration=0.2,
                   jitter=0.018, shimmer=0.08, pause=1.6, tremor_st=0.15, formant=0.98),
    "happy": Prosody(f0_st=4.0, f0_range=1.6, rate=1.1, gain_db=3, tilt_db=2, oq=0.52, aspiration=0.05,
                     pause=0.9, final_st=0.5, formant=1.04),
    "excited": Prosody(f0_st=6.0, f0_range=1.9, rate=1.22, gain_db=6, tilt_db=4, oq=0.5, aspiration=0.05,
                       jitter=0.01, shimmer=0.05, pause=0.75, final_st=1.0, formant=1.03),
    "angry": Prosody(f0_st=3.0, f0_range=1.4, rate=1.18, gain_db=8, tilt_db=6, oq=0.42, aspiration=0.03,
                     jitter=0.012, shimmer=0.06, pause=0.8, final_st=-4.0, formant=1.02),
    "fear": Prosody(f0_st=7.0, f0_range=0.8, rate=1.28, gain_db=-1, tilt_db=1, oq=0.6, aspiration=0.16,
                    jitter=0.025, shimmer=0.08, pause=0.9, final_st=2.0, tremor_st=0.6),
    "surprise": Prosody(f0_st=5.0, f0_range=2.2, rate=1.0, gain_db=3, tilt_db=2, oq=0.54, aspiration=0.06,
                        jitter=0.01, shimmer=0.05, final_st=5.0, formant=1.03),
    "disgust": Prosody(f0_st=-1.0, f0_range=1.1, rate=0.82, gain_db=1, tilt_db=-1, oq=0.5, aspiration=0.1,
                       jitter=0.035, shimmer=0.12, pause=1.1, final_st=-3.0, formant=0.95),
}

# --------------------------------------------------------------------------------------------------------------
# languages, channels and corpora
# --------------------------------------------------------------------------------------------------------------
# Made-up languages: vowel inventory, consonants, syllable rate (syllables/s) and structure (onset, coda, CCV
# cluster probabilities; syllables per phrase).
LANGUAGES = {lang.name: lang for lang in (
    Language("synth-a", ("i", "e", "E", "a", "o", "u"), tuple("ptkbdgsfvmnlr"),
             syllable_rate=5.6, onset_p=0.9, coda_p=0.15, phrase=(4, 8)),  # 5 vowels, open CV syllables
    Language("synth-b", ("i", "y", "e", "2", "a", "o", "u", "@"), tuple("ptkbdgsSfxzmnlr"),
             syllable_rate=4.8, onset_p=0.85, coda_p=0.55, cluster_p=0.25, phrase=(3, 6)),  # front rounded, CCVC
    Language("synth-c", ("a", "i", "u"), tuple("tkbdsSxmnlrwj"),
             syllable_rate=4.5, onset_p=1.0, coda_p=0.5, phrase=(3, 6)),  # 3 vowels, obligatory onsets
    Language("synth-d", ("i", "E", "{", "V", "a", "u", "@", "1"), tuple("ptkbdgsSfzvmnlrwj"),
             syllable_rate=5.2, onset_p=0.8, coda_p=0.45, cluster_p=0.15, phrase=(3, 7)),  # lax vowels
    Language("synth-t", ("a", "i", "u", "y", "@", "o"), tuple("ptkSsxfmnljw"),
             syllable_rate=5.0, onset_p=0.95, coda_p=0.25, phrase=(4, 7)),
)}


@dataclass(frozen=True)
class Channel:
    """The recording chain of a corpus."""

    name: str
    band: tuple[float, float]
    """Pass band in Hz; 0 leaves that side open."""
    snr_db: float
    """Noise level relative to neutral speech (louder emotions get a better SNR, as in a real room)."""
    noise_color: float
    """Noise spectrum slope: 0 white, 1 pink, 2 brown."""
    rt60: float
    """Reverberation time of the synthetic room, s (0 = dry)."""
    wet_db: float
    """Reverberant energy relative to the direct sound, dB."""
    hum_hz: float = 0.0
    """Mains hum fundamental (0 = none)."""


@dataclass(frozen=True)
class SpeakerSpread:
    """How much the speakers of a corpus differ: standard deviations of the per-speaker draws."""

    f0_st: float = 2.0
    """Speaker f0 around the gender mean, semitones."""
    vt: float = 0.035
    """Relative vocal-tract (formant) scale."""
    oq: float = 0.03
    rate: float = 0.07
    """Log tempo."""
    f0_range: float = 0.15
    """Log pitch range."""
    breath: float = 0.03
    gain_db: float = 1.0
    """Recording level, dB, clipped at ``gain_clip_db`` (levelled recordings vary little)."""
    gain_clip_db: float = 2.0
    expressivity: float = 0.12
    """Log acting intensity."""


@dataclass(frozen=True)
class Session:
    """Per-speaker recording sessions (0 everywhere: every speaker sits in the same set-up)."""

    snr_db: float = 0.0
    """Standard deviation of the speaker's noise level, dB."""
    tilt_db: float = 0.0
    """Standard deviation of the microphone's spectral slope above 1 kHz, dB/octave."""


@dataclass(frozen=True)
class CorpusSpec:
    """One synthetic corpus: who speaks which language through which channel, with which labels."""

    name: str
    language: str
    labels: tuple[str, ...]
    speakers: int
    per_class: int
    """Utterances per class and speaker."""
    channel: Channel
    strength: float = 1.0
    """Scale of the emotion differences (the transfer target is subtler)."""
    description: str = ""
    spread: SpeakerSpread = SpeakerSpread()
    take_gain_db: float = 1.5
    """Level change per take (the speaker moves relative to the microphone), uniform +-dB."""
    take_strength: tuple[float, float] = (0.75, 1.2)
    """Acted intensity per take, uniform range (multiplies ``strength``)."""
    session: Session = Session()

    @property
    def utterances(self) -> int:
        return self.speakers * self.per_class * len(self.labels)


CORPORA: dict[str, CorpusSpec] = {c.name: c for c in (
    CorpusSpec("synth7", "synth-a", ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"), 10, 5,
               Channel("studio", (0, 7800), 35, 1.0, 0.15, -14), description="acted, studio, 7 classes"),
    CorpusSpec("synth5", "synth-b", ("angry", "calm", "happy", "sad", "surprise"), 10, 6,
               Channel("room", (60, 7000), 24, 1.0, 0.5, -6), description="acted, reverberant room, 5 classes"),
    CorpusSpec("synth4", "synth-c", ("angry", "excited", "neutral", "sad"), 12, 6,
               Channel("phone", (300, 3400), 22, 0.0, 0.1, -16), description="telephone band, 4 classes"),
    CorpusSpec("synth2", "synth-d", ("angry", "neutral"), 8, 16,
               Channel("field", (0, 5000), 15, 2.0, 0.3, -10, hum_hz=50), description="noisy field, binary"),
    # The transfer target: the language of synth7 through a channel none of the pretraining corpora has, with
    # subtler emotions and only 2 utterances per class and speaker (about 90 training utterances). What the
    # pretrained backbone learnt about these emotions carries over; a model trained from scratch on so few
    # utterances overfits. Tried on the demo's pretrained run: a new language (synth-t) with 5 speakers x 8, or
    # 16 x 3 with wider speaker and session spread, gave adapters no dev-UAR lead (dev sets of 32-36 utterances
    # swing by 10 points between evaluations); 16 speakers x 2 at strength 0.5 gave adapters 0.79 vs scratch 0.71.
    CorpusSpec("synth_target", "synth-a", ("angry", "happy", "neutral", "sad"), 16, 2,
               Channel("lapel", (80, 6000), 20, 1.0, 0.35, -9, hum_hz=60), strength=0.5,
               description="small transfer target: a new channel, subtler emotions, few utterances per speaker"),
)}
TARGET = "synth_target"
"""The transfer-target corpus of the default set."""


def build_synthetic(out: Path, seed: int = 0, cfg: PrepareConfig = PrepareConfig(), names: list[str] | None = None,
                    jobs: int = 0) -> dict[str, dict]:
    """Generate the synthetic corpora and prepare each through the normal pipeline.

    Args:
        out: output root; raw audio goes to ``out/raw/<corpus>/``, manifests to ``out/<corpus>/``.
        seed: non-negative; the same seed gives the same audio and manifests, another seed other audio.
        cfg: how ``prepare_corpus`` checks audio and partitions (speaker-independent by default).
        names: corpora to build (keys of :data:`CORPORA`); None builds all of them.
        jobs: generation processes; 0 uses every core.
    Returns:
        ``{corpus: prepare report}``.
    """
    if seed < 0:
        raise CorpusError(f"seed must be >= 0, got {seed}")
    unknown = sorted(set(names or ()) - set(CORPORA))
    if unknown:
        raise CorpusError(f"unknown synthetic corpus {', '.join(unknown)}; choose from {', '.join(CORPORA)}")
    specs = [CORPORA[n] for n in dict.fromkeys(names if names is not None else CORPORA)]
    out = Path(out)
    raw = out / "raw"
    tasks = []
    for spec in specs:
        # write to a hidden staging folder and swap it in, so a stale or half-built corpus never mixes in
        staging = raw / f".{spec.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        speakers = make_speakers(spec, seed)
        meta = {"corpus": spec.name, "description": spec.description, "seed": seed, "sample_rate": SR,
                "language": spec.language, "labels": list(spec.labels), "strength": spec.strength,
                "channel": asdict(spec.channel), "speakers": {s.id: asdict(s) for s in speakers}}
        (staging / "corpus.json").write_text(json.dumps(meta, indent=1))
        tasks += [(spec.name, spk, seed, str(staging)) for spk in speakers]
    tasks.sort(key=lambda t: -CORPORA[t[0]].per_class * len(CORPORA[t[0]].labels))  # big jobs first

    prog = Progress("synth", sum(s.utterances for s in specs), "utterances")
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1:
        for t in tasks:
            prog.update(_speaker_job(t))
    else:
        with ProcessPoolExecutor(min(jobs, len(tasks))) as pool:
            for fut in as_completed([pool.submit(_speaker_job, t) for t in tasks]):
                prog.update(fut.result())
    prog.close()

    reports = {}
    for spec in specs:
        final = raw / spec.name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(raw / f".{spec.name}.partial", final)
        reports[spec.name] = prepare_corpus("synth", final, out / spec.name, cfg, name=spec.name)
    return reports


def make_speakers(spec: CorpusSpec, seed: int) -> list[Speaker]:
    """The corpus's speakers, alternating female/male (ids ``f01``, ``m02``, ...), seeded per speaker."""
    out = []
    for i in range(spec.speakers):
        sid = f"{'fm'[i % 2]}{i + 1:02d}"
        rng = _rng(seed, spec.name, sid, "speaker")
        female = sid[0] == "f"
        sd = spec.spread
        out.append(Speaker(
            id=sid, gender="female" if female else "male",
            f0_hz=round((205.0 if female else 115.0) * 2 ** (rng.normal(0, sd.f0_st) / 12), 2),
            vt_scale=round((1.15 if female else 1.0) * (1 + rng.normal(0, sd.vt)), 4),
            oq_offset=round(rng.normal(0.03 if female else 0.0, sd.oq), 4),
            rate=round(float(np.exp(rng.normal(0, sd.rate))), 4),
            f0_range=round(float(np.exp(rng.normal(0, sd.f0_range))), 4),
            breath=round(abs(rng.normal(0, sd.breath)) + (0.03 if female else 0.0), 4),
            # recordings are levelled per speaker, so speaker level varies little next to the emotion level cue
            gain_db=round(float(np.clip(rng.normal(0, sd.gain_db), -sd.gain_clip_db, sd.gain_clip_db)), 2),
            expressivity=round(float(np.exp(rng.normal(0, sd.expressivity))), 4),
        ))
    return out


def synth_utterance(spec: CorpusSpec, spk: Speaker, label: str, index: int, seed: int,
                    session: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """One recorded utterance, float32 ``(frames,)`` at 16 kHz in [-1, 1].

    ``session`` is the speaker's ``(room impulse response, noise bed)`` from :func:`recording_session`;
    None computes it (the builder computes it once per speaker).
    """
    rng = _rng(seed, spec.name, spk.id, label, index)
    strength = spec.strength * spk.expressivity * rng.uniform(*spec.take_strength)  # acted intensity varies per take
    pro = NEUTRAL.toward(EMOTIONS[label], strength)
    x = synthesize(LANGUAGES[spec.language], spk, pro, rng, speech_s=rng.uniform(1.2, 2.8))
    x *= 10 ** (rng.uniform(-spec.take_gain_db, spec.take_gain_db) / 20)  # the speaker moves relative to the microphone
    room, bed = session if session is not None else recording_session(spec, spk, seed)
    return apply_channel(x, spec.channel, room, bed, rng)


def recording_session(spec: CorpusSpec, spk: Speaker, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The speaker's place in the corpus's room and its background noise.

    Returns the impulse response ``(taps,)`` (a unit direct path plus exponentially decaying noise, 60 dB down
    after ``rt60`` ±10 % per speaker, ``wet_db`` below the direct sound) and an 8 s noise bed ``(frames,)`` of
    unit RMS in the channel's noise colour, from which each utterance takes a random excerpt.
    """
    ch = spec.channel
    rng = _rng(seed, spec.name, spk.id, "session")
    room = np.ones(1)
    if ch.rt60 > 0:
        rt60 = ch.rt60 * rng.uniform(0.9, 1.1)
        t = np.arange(int(rt60 * SR)) / SR
        tail = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)
        tail[: int(0.004 * SR)] = 0.0  # first reflections arrive a few ms after the direct sound
        tail = np.convolve(tail, [0.5, 0.5], mode="same")  # walls absorb high frequencies
        room = tail * 10 ** (ch.wet_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)
        room[0] += 1.0
    m = 8 * SR
    f = sfft.rfftfreq(m, 1 / SR)
    bed = sfft.irfft(sfft.rfft(rng.standard_normal(m)) * np.maximum(f, 20.0) ** (-ch.noise_color / 2), m)
    bed = bed / (np.sqrt(np.mean(bed**2)) + 1e-12)
    ses = spec.session
    if ses.snr_db > 0 or ses.tilt_db > 0:  # own stream: corpora without session effects stay as they were
        srng = _rng(seed, spec.name, spk.id, "mic")
        bed = bed * 10 ** (srng.normal(0, ses.snr_db) / 20)
        tilt = srng.normal(0, ses.tilt_db)
        n = 512  # the microphone: a short linear-phase FIR with the speaker's slope above 1 kHz
        fr = sfft.rfftfreq(n, 1 / SR)
        mag = 10 ** (tilt * np.log2(np.maximum(fr, 1000.0) / 1000.0) / 20)
        mic = np.roll(sfft.irfft(mag, n), n // 2) * np.hanning(n)
        room = fftconvolve(room, mic)[n // 2:]
    return room, bed


def apply_channel(x: np.ndarray, ch: Channel, room: np.ndarray, bed: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Reverberate, add noise (an excerpt of ``bed``) and hum, band-limit; float32 ``(frames,)``, peak <= 0.99."""
    n = x.size
    y = fftconvolve(x, room)[:n] if room.size > 1 else x.copy()
    start = int(rng.integers(0, max(1, bed.size - n + 1)))
    noise = np.resize(bed[start:], n) * (REF_RMS * 10 ** (-ch.snr_db / 20))
    if ch.hum_hz:
        t = np.arange(n) / SR
        hum = sum(np.sin(2 * np.pi * k * ch.hum_hz * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
        noise += 0.5 * REF_RMS * 10 ** (-ch.snr_db / 20) * hum
    y = sosfilt(_band_sos(ch.band), y + noise)
    peak = np.max(np.abs(y))
    if peak > 0.99:  # rare (loud angry takes): scale down instead of clipping
        y *= 0.99 / peak
    return y.astype(np.float32)


@cache
def _band_sos(band: tuple[float, float]) -> np.ndarray:
    lo, hi = band
    if lo > 0 and hi > 0:
        return butter(4, (lo, hi), "bandpass", fs=SR, output="sos")
    if hi > 0:
        return butter(6, hi, "lowpass", fs=SR, output="sos")
    if lo > 0:
        return butter(4, lo, "highpass", fs=SR, output="sos")
    return np.array([[1.0, 0, 0, 1.0, 0, 0]])


def _speaker_job(task: tuple[str, Speaker, int, str]) -> int:
    """Write every utterance of one speaker; returns how many."""
    name, spk, seed, root = task
    spec = CORPORA[name]
    session = recording_session(spec, spk, seed)
    folder = Path(root) / spk.id
    folder.mkdir(parents=True, exist_ok=True)
    # the matrices are small: BLAS threads only contend with the other workers (10x slower on 2 busy cores)
    with threadpool_limits(1):
        for label in spec.labels:
            for i in range(spec.per_class):
                wave = synth_utterance(spec, spk, label, i, seed, session)
                sf.write(str(folder / f"{spk.id}_{label}_{i:03d}.flac"), wave, SR, format="FLAC", subtype="PCM_16")
    return spec.per_class * len(spec.labels)


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator seeded from ``seed`` and string/int keys (crc32: stable across processes and runs,
    unlike ``hash``)."""
    return np.random.default_rng([seed] + [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys])
