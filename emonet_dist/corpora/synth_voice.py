"""A small source–filter voice with syllable rhythm: the DSP behind the synthetic corpora (:mod:`.synth`).

One utterance is synthesised in four steps:

1. **plan**: phrases of syllables (onset consonant, vowel, optional coda) with durations set by the language's
   syllable rate, the emotion's tempo and the speaker's rate; pauses between phrases;
2. **f0 contour**: speaker level + emotion shift, per-phrase declination, pitch accents scaled by the emotion's
   range, phrase-final rise/fall, optional tremor and slow drift;
3. **source**: a Rosenberg glottal-flow pulse train (open quotient from emotion and speaker) with per-period
   jitter and shimmer, differentiated (lip radiation), plus pulse-synchronous aspiration noise; consonants
   add band-shaped frication and burst noise;
4. **filter**: a cascade of four 2nd-order resonators (F1–F4 with bandwidths, Klatt-style, unity DC gain)
   whose formants glide between vowel targets and consonant loci, plus an emotion-dependent spectral tilt.

The resonator cascade is time varying. A per-sample IIR loop in Python would dominate the build time, so the
cascade is applied frame by frame: each 24 ms Hann frame (hop 12 ms) of the excitation is zero-padded to 768
points (so the resonators' ringing does not wrap around), multiplied by the cascade's complex frequency response
at that frame's formants, and overlap-added. For a fixed formant set this is exactly the linear filter.

Everything is float32/float64 numpy at 16 kHz; all randomness comes from the ``rng`` passed in, so an
utterance depends only on its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view

SR = 16000
"""Sample rate of every synthetic utterance, Hz."""
REF_RMS = 0.05
"""RMS of neutral speech over its voiced/active samples before emotion and speaker gain (about -26 dBFS)."""
_HOP, _WIN, _NFFT = 192, 384, 768
_CTRL = 8  # envelopes are built at SR / 8 = 2 kHz

# Reference (adult male) formants F1-F4 in Hz, X-SAMPA-like keys (E = ɛ, 2 = ø, @ = ə, { = æ, V = ʌ, 1 = ɨ);
# speakers scale them by their vocal-tract factor. Consonant keys likewise (S = ʃ, x = velar fricative).
VOWELS = {
    "i": (270, 2290, 3010, 3600), "e": (400, 2000, 2600, 3550), "E": (530, 1840, 2480, 3500),
    "a": (730, 1090, 2440, 3450), "o": (450, 850, 2400, 3400), "u": (300, 870, 2240, 3400),
    "y": (270, 1800, 2150, 3300), "2": (400, 1500, 2300, 3400), "@": (500, 1500, 2500, 3500),
    "{": (660, 1720, 2410, 3500), "V": (640, 1190, 2390, 3450), "1": (320, 1400, 2400, 3400),
}
# stop loci (F1-F4 Hz) by place; consonant symbol -> (kind, noise type, voiced, formant locus F1-F4 in Hz)
_LAB, _ALV, _VEL = (250, 800, 2200, 3300), (250, 1700, 2600, 3400), (250, 2100, 2300, 3300)
CONSONANTS = {
    "p": ("stop", "burst_lab", False, _LAB), "t": ("stop", "burst_alv", False, _ALV),
    "k": ("stop", "burst_vel", False, _VEL), "b": ("stop", "burst_lab", True, _LAB),
    "d": ("stop", "burst_alv", True, _ALV), "g": ("stop", "burst_vel", True, _VEL),
    "s": ("fric", "s", False, (300, 1700, 2700, 3500)), "S": ("fric", "sh", False, (300, 1900, 2400, 3400)),
    "f": ("fric", "f", False, (300, 1000, 2300, 3300)), "x": ("fric", "x", False, (300, 1900, 2300, 3300)),
    "z": ("fric", "s", True, (300, 1700, 2700, 3500)), "v": ("fric", "f", True, (300, 1000, 2300, 3300)),
    "m": ("nasal", "none", True, (280, 900, 2200, 3300)), "n": ("nasal", "none", True, (280, 1500, 2500, 3400)),
    "l": ("approx", "none", True, (360, 1300, 2700, 3300)), "r": ("approx", "none", True, (420, 1300, 1700, 3200)),
    "w": ("approx", "none", True, (300, 700, 2200, 3300)), "j": ("approx", "none", True, (280, 2200, 2900, 3500)),
}
# noise type -> (centre Hz, width in octaves, level relative to the vowel source)
NOISES = {"none": (2000, 3.0, 0.0), "s": (5500, 0.6, 0.3), "sh": (3200, 0.6, 0.3), "f": (4000, 2.0, 0.1),
          "x": (1800, 0.8, 0.2), "burst_lab": (900, 1.5, 0.45), "burst_alv": (4000, 1.0, 0.45),
          "burst_vel": (2000, 0.6, 0.45)}
_NOISE_IDX = {k: i for i, k in enumerate(NOISES)}
_SIL, _VOWEL, _CLOSURE, _BURST, _ASP, _FRIC, _NASAL, _APPROX = range(8)


@dataclass(frozen=True)
class Prosody:
    """How an emotion sets the voice. The defaults are neutral speech."""

    f0_st: float = 0.0
    """f0 level shift, semitones."""
    f0_range: float = 1.0
    """Pitch-accent and syllable-excursion multiplier."""
    rate: float = 1.0
    """Syllable-rate (tempo) multiplier."""
    gain_db: float = 0.0
    """Level, dB."""
    tilt_db: float = 0.0
    """Extra spectral slope above 1 kHz, dB/octave (positive = flatter, brighter)."""
    oq: float = 0.6
    """Glottal open quotient: about 0.4 tense/pressed, 0.75 breathy."""
    aspiration: float = 0.04
    """Aspiration noise level relative to the voiced source."""
    jitter: float = 0.008
    """Relative std of the period length, per period."""
    shimmer: float = 0.04
    """Relative std of the pulse amplitude, per period."""
    pause: float = 1.0
    """Pause-length multiplier."""
    final_st: float = -2.0
    """Phrase-final f0 movement, semitones (negative = fall, positive = question-like rise)."""
    tremor_st: float = 0.0
    """Depth of a 5.5 Hz f0 tremor, semitones."""
    formant: float = 1.0
    """Formant scale (smiling raises formants, a disgust grimace lowers them)."""

    def toward(self, other: Prosody, strength: float) -> Prosody:
        """Interpolate every field: 0 gives ``self``, 1 gives ``other``, 1.2 exaggerates ``other``."""
        return Prosody(**{f.name: getattr(self, f.name) + strength * (getattr(other, f.name) - getattr(self, f.name))
                          for f in fields(Prosody)})


@dataclass(frozen=True)
class Speaker:
    id: str
    gender: str
    f0_hz: float
    """Mean f0 in neutral speech, Hz."""
    vt_scale: float
    """Formant scaling factor (shorter vocal tract = higher formants; about 1.0 male, 1.15 female)."""
    oq_offset: float = 0.0
    rate: float = 1.0
    f0_range: float = 1.0
    breath: float = 0.0
    """Added aspiration level (habitually breathy speakers)."""
    gain_db: float = 0.0
    expressivity: float = 1.0
    """How strongly this speaker acts emotions (multiplies the emotion strength; used by the corpus builder)."""


@dataclass(frozen=True)
class Language:
    name: str
    vowels: tuple[str, ...]
    """Vowel inventory (keys of :data:`VOWELS`)."""
    consonants: tuple[str, ...]
    """Consonant inventory (keys of :data:`CONSONANTS`)."""
    syllable_rate: float
    """Neutral syllables per second."""
    onset_p: float = 0.85
    """Probability that a syllable has an onset consonant."""
    coda_p: float = 0.3
    cluster_p: float = 0.0
    """Probability of a second onset consonant (CCV)."""
    phrase: tuple[int, int] = (3, 7)
    """Syllables per phrase, inclusive range."""


def synthesize(lang: Language, spk: Speaker, pro: Prosody, rng: np.random.Generator,
               speech_s: float = 2.0) -> np.ndarray:
    """One dry utterance of about ``speech_s`` seconds of speech plus pauses and edge silences.

    Returns float64 ``(frames,)`` at :data:`SR`, with RMS over the active part equal to
    ``REF_RMS * 10**((pro.gain_db + spk.gain_db) / 20)``.
    """
    segs, syl = _plan(lang, spk, pro, rng, speech_s)
    lens = np.maximum(1, np.round(segs["dur"] * SR).astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    n = int(lens.sum())
    t = np.arange(n)

    # [1] envelopes at a 2 kHz control rate (8x cheaper than per sample, still smooth): syllable energy humps
    # (the 3-7 Hz modulation), voicing, consonant noise
    tc = t[::_CTRL]
    sid = np.searchsorted(starts, tc, side="right") - 1
    pos = (tc - starts[sid]) / SR
    u = pos * SR / lens[sid]
    kind = segs["kind"][sid]
    rate = SR / _CTRL
    hump = np.where(kind == _VOWEL, 0.25 + 0.75 * np.sin(np.pi * u), 1.0)
    amp = _smooth(segs["amp"][sid] * hump, 0.012 * rate)
    voicing = _smooth(segs["voiced"][sid], 0.008 * rate)
    burst = np.where(kind == _BURST, np.exp(-pos / 0.004), 1.0)
    noise_env = _smooth(segs["noise"][sid] * burst, 0.003 * rate)
    asp_env = _smooth(np.where(kind == _ASP, 0.35 * (1 - u), 0.0), 0.005 * rate)
    voiced_gain = np.interp(t, tc, voicing * amp)
    asp_gain = np.interp(t, tc, asp_env * amp)
    noise_env = np.interp(t, tc, noise_env)
    active = np.repeat(amp > 0.3 * amp.max(), _CTRL)[:n]

    # [2] f0 at frame rate, then per sample
    t_frames = (np.arange(n // _HOP + 2) * _HOP) / SR
    f0 = np.interp(t / SR, t_frames, _f0_contour(t_frames, syl, spk, pro, rng))

    # [3] source: glottal pulses with jitter/shimmer + aspiration, and consonant noise
    oq = float(np.clip(pro.oq + spk.oq_offset, 0.3, 0.85))
    flow, dflow = _glottal(f0, oq, pro.jitter, pro.shimmer, rng)
    src_rms = np.sqrt(np.mean(dflow**2)) + 1e-12
    asp = rng.standard_normal(n, dtype=np.float32) * src_rms
    breath = max(0.0, pro.aspiration + spk.breath)
    excitation = (dflow + breath * (0.4 + 0.6 * flow) * asp) * voiced_gain + asp * asp_gain
    frication = rng.standard_normal(n, dtype=np.float32) * src_rms * noise_env

    # [4] time-varying vocal tract and frication shaping, frame by frame
    m = (n + _WIN) // _HOP + 1
    centres = (np.arange(m) * _HOP - _WIN + _WIN // 2) / SR
    formants = _formant_tracks(segs, starts, lens, centres) * spk.vt_scale * pro.formant
    bw = np.array([60.0, 90.0, 130.0, 180.0]) * (1.0 + np.array([2.0, 1.0, 0.5, 0.3]) * max(0.0, oq - 0.5))
    freqs = sfft.rfftfreq(_NFFT, 1 / SR)
    h_vt = _cascade_response(formants, bw) * _tilt(freqs, pro.tilt_db)
    # frication is silent in most frames: shape only the frames that hold some
    noisy = np.pad(noise_env > 0, (_WIN, _WIN + _HOP))
    rows = np.flatnonzero(sliding_window_view(noisy, _WIN)[::_HOP][:m].any(axis=1))
    seg_at = np.clip(np.searchsorted(starts, np.clip(centres[rows] * SR, 0, n - 1), side="right") - 1, 0, len(lens) - 1)
    h_noise = _noise_shapes(freqs, spk.vt_scale)[segs["ntype"][seg_at]]
    y = _ola_filter([(excitation, h_vt, None), (frication, h_noise, rows)], n, m).astype(np.float64)

    rms = np.sqrt(np.mean(y[active] ** 2)) + 1e-12
    return y * (REF_RMS * 10 ** ((pro.gain_db + spk.gain_db) / 20) / rms)


def _plan(lang: Language, spk: Speaker, pro: Prosody, rng: np.random.Generator, speech_s: float):
    """Segments (arrays: dur s, kind, amp, voiced, noise, ntype, formants (S, 4) with NaN = no target) and
    syllables (list of dicts: centre s, duration s, accent, phrase start/end flags)."""
    rate = lang.syllable_rate * pro.rate * spk.rate
    n_syl = max(4, int(round(speech_s * rate / 1.2)))  # accents and phrase-final lengthening add ~20 %
    rows: list[tuple] = []
    syl: list[dict] = []
    t = 0.0

    def add(dur, kind, amp=0.0, voiced=0.0, noise=0.0, ntype="none", fm=None):
        nonlocal t
        rows.append((dur, kind, amp, voiced, noise, _NOISE_IDX[ntype], fm if fm is not None else (np.nan,) * 4))
        t += dur

    add(rng.uniform(0.06, 0.2), _SIL)
    left = n_syl
    while left > 0:
        size = min(left, int(rng.integers(lang.phrase[0], lang.phrase[1] + 1)))
        accents = rng.random(size) < 0.3
        accents[int(rng.integers(0, min(2, size)))] = True  # every phrase carries at least one accent
        for j in range(size):
            final = j == size - 1
            d_syl = rng.uniform(0.8, 1.25) / rate * (1.25 if accents[j] else 1.0) * (1.35 if final else 1.0)
            start = t
            onset = []
            if rng.random() < lang.onset_p:
                onset.append(lang.consonants[int(rng.integers(len(lang.consonants)))])
                if rng.random() < lang.cluster_p:
                    onset.append(str(rng.choice([c for c in lang.consonants if CONSONANTS[c][0] == "approx"] or ["l"])))
            coda = [lang.consonants[int(rng.integers(len(lang.consonants)))]] if rng.random() < lang.coda_p else []
            # consonants shrink less than vowels at fast tempo (sqrt), so vowels carry most of the tempo change
            c_scale = 1.0 / np.sqrt(pro.rate * spk.rate)
            onset_parts = [p for c in onset for p in _consonant(c, c_scale)]
            coda_parts = [p for c in coda for p in _consonant(c, c_scale)]
            for part in onset_parts:
                add(*part)
            vowel = VOWELS[lang.vowels[int(rng.integers(len(lang.vowels)))]]
            v_dur = max(0.05, d_syl - sum(p[0] for p in onset_parts + coda_parts))
            v_start = t
            add(v_dur, _VOWEL, (1.2 if accents[j] else 1.0) * (0.8 if final else 1.0), 1.0, 0.0, "none", vowel)
            for part in coda_parts:
                add(*part)
            syl.append({"centre": v_start + v_dur / 2, "dur": t - start, "accent": bool(accents[j]),
                        "first": j == 0, "final": final})
        left -= size
        if left > 0:
            add(rng.uniform(0.12, 0.3) * pro.pause, _SIL)
    add(rng.uniform(0.1, 0.25), _SIL)
    dur, kind, amp, voiced, noise, ntype, fm = zip(*rows)
    segs = {"dur": np.array(dur), "kind": np.array(kind), "amp": np.array(amp), "voiced": np.array(voiced),
            "noise": np.array(noise), "ntype": np.array(ntype), "formants": np.array(fm, dtype=np.float64)}
    return segs, syl


def _consonant(c: str, scale: float) -> list[tuple]:
    """Segments of consonant ``c``: ``(dur s, kind, amp, voiced, noise level, noise type, formant target)``."""
    kind, ntype, voiced, locus = CONSONANTS[c]
    level = NOISES[ntype][2]
    if kind == "stop":  # closure (silent, or a voice bar), burst (too short for a formant target), aspiration
        parts = [(0.045 * scale, _CLOSURE, 0.12 if voiced else 0.0, 1.0 if voiced else 0.0, 0.0, "none", locus),
                 (0.012, _BURST, 0.0, 0.0, level * (0.6 if voiced else 1.0), ntype, None)]
        return parts if voiced else parts + [(0.03 * scale, _ASP, 1.0, 0.0, 0.0, "none", locus)]
    if kind == "fric":
        return [(0.08 * scale, _FRIC, 0.3 if voiced else 0.0, 0.7 if voiced else 0.0, level, ntype, locus)]
    if kind == "nasal":
        return [(0.06 * scale, _NASAL, 0.35, 1.0, 0.0, "none", locus)]
    return [(0.05 * scale, _APPROX, 0.6, 1.0, 0.0, "none", locus)]


def _f0_contour(t: np.ndarray, syl: list[dict], spk: Speaker, pro: Prosody, rng: np.random.Generator) -> np.ndarray:
    """f0 in Hz at times ``t`` (s): level, declination, accents, phrase-final movement, tremor, drift."""
    rng_range = pro.f0_range * spk.f0_range
    st = np.full_like(t, pro.f0_st)
    phrase_start = 0.0
    for i, s in enumerate(syl):
        if s["first"]:
            phrase_start = s["centre"] - s["dur"] / 2
            end = next(x["centre"] + x["dur"] / 2 for x in syl[i:] if x["final"])
            inside = (t >= phrase_start) & (t < end + 0.15)
            # declination: about 2 st/s, reset at each phrase start
            st[inside] += 1.0 - 2.0 * (t[inside] - phrase_start)
        height = (2.5 * rng.uniform(0.6, 1.3) if s["accent"] else rng.normal(0.0, 0.6)) * rng_range
        st += height * np.exp(-0.5 * ((t - s["centre"]) / (0.35 * s["dur"])) ** 2)
        if s["final"]:
            ramp = np.clip((t - (s["centre"] - s["dur"] / 2)) / s["dur"], 0, 1)
            st += (pro.final_st if i == len(syl) - 1 else 0.5 * abs(pro.final_st)) * ramp * np.sqrt(rng_range)
    st += pro.tremor_st * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t + rng.uniform(0, 2 * np.pi))
    drift = np.cumsum(rng.normal(0, 1, t.size))
    st += 0.4 * (drift - np.linspace(drift[0], drift[-1], t.size)) / (np.sqrt(t.size) + 1e-9)
    return np.clip(spk.f0_hz * 2 ** (st / 12), 55.0, 650.0)


def _glottal(f0: np.ndarray, oq: float, jitter: float, shimmer: float, rng: np.random.Generator):
    """Rosenberg glottal flow ``(N,)`` in [0, 1] and its derivative (the excitation, lip radiation included).

    The period is perturbed per cycle (jitter) and the amplitude per cycle (shimmer)."""
    k0 = np.cumsum(f0 / SR).astype(np.int64)
    jit = 1.0 + jitter * rng.standard_normal(k0[-1] + 2)
    phase = np.cumsum(f0 * jit[k0] / SR)
    k = phase.astype(np.int64)
    frac = phase - k
    flow = _rosenberg(round(oq, 3))[(frac * _PULSE_RES).astype(np.int64)]
    shim = np.clip(1.0 + shimmer * rng.standard_normal(k[-1] + 2), 0.2, None)[k]
    flow = flow * shim
    return flow, np.diff(flow, prepend=0.0)


_PULSE_RES = 4096


@lru_cache(maxsize=64)
def _rosenberg(oq: float) -> np.ndarray:
    """One period of Rosenberg glottal flow, ``(_PULSE_RES,)`` samples of phase (looked up: cheaper than cos)."""
    frac = np.arange(_PULSE_RES) / _PULSE_RES
    tp = 0.66 * oq  # opening phase; closing phase oq - tp: a shorter closing gives more high-frequency energy
    tn = oq - tp
    return np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                    np.where(frac < oq, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0))


def _formant_tracks(segs: dict, starts: np.ndarray, lens: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(M, 4)`` formants at frame centres (s): linear glides between vowel targets and consonant loci."""
    fm = segs["formants"]
    knots_t, knots_f = [], []
    for i in np.flatnonzero(~np.isnan(fm[:, 0])):
        s, d = starts[i] / SR, lens[i] / SR
        if segs["kind"][i] == _VOWEL:  # two knots hold a steady state in the middle of the vowel
            knots_t += [s + 0.3 * d, s + 0.7 * d]
            knots_f += [fm[i], fm[i]]
        else:
            knots_t.append(s + 0.5 * d)
            knots_f.append(fm[i])
    kt, kf = np.array(knots_t), np.array(knots_f)
    return np.stack([np.interp(centres, kt, kf[:, j]) for j in range(4)], axis=1)


def _cascade_response(formants: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Complex response ``(M, NFFT//2+1)`` of the F1-F4 resonator cascade, per frame.

    Each resonator is ``H(z) = (1 - c + q) / (1 - c z^-1 + q z^-2)`` with ``c = 2 r cos(2 pi F / SR)``,
    ``q = r^2`` and ``r = exp(-pi B / SR)`` (unity gain at DC, Klatt 1980). The cascade's 8th-order denominator
    is multiplied out per frame and evaluated on every bin with one matrix product."""
    m, k = formants.shape
    r = np.exp(-np.pi * bw / SR)[None, :]
    c = 2 * r * np.cos(2 * np.pi * np.minimum(formants, 0.45 * SR) / SR)
    q = np.broadcast_to(r * r, c.shape)
    a = np.zeros((m, 2 * k + 1))
    a[:, 0] = 1.0
    for j in range(k):  # multiply in one quadratic: a(z) <- a(z) (1 - c z^-1 + q z^-2)
        a[:, 2:] = a[:, 2:] - c[:, j:j + 1] * a[:, 1:-1] + q[:, j:j + 1] * a[:, :-2]
        a[:, 1] = a[:, 1] - c[:, j] * a[:, 0]
    gain = np.prod(1 - c + q, axis=1, keepdims=True)
    return gain.astype(np.float32) / (a @ _unit_powers(2 * k + 1)).astype(np.complex64)


@lru_cache(maxsize=4)
def _unit_powers(order: int) -> np.ndarray:
    """``(order, NFFT//2+1)`` powers ``z^-i`` on the FFT bins: ``a @ _unit_powers(n)`` evaluates polynomials."""
    w = 2 * np.pi * sfft.rfftfreq(_NFFT, 1 / SR) / SR
    return np.exp(-1j * np.outer(np.arange(order), w))


def _tilt(freqs: np.ndarray, db_per_octave: float) -> np.ndarray:
    octaves = np.log2(np.maximum(freqs, 1000.0) / 1000.0)
    return (10 ** (db_per_octave * octaves / 20)).astype(np.float32)


def _noise_shapes(freqs: np.ndarray, vt_scale: float) -> np.ndarray:
    """``(types, F)`` magnitude shapes of consonant noise: a Gaussian bump in log frequency per type."""
    logf = np.log2(np.maximum(freqs, 50.0))
    rows = [np.exp(-0.5 * ((logf - np.log2(fc * vt_scale)) / w) ** 2) for fc, w, _ in NOISES.values()]
    return np.stack(rows).astype(np.float32)


def _ola_filter(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], n: int, m: int) -> np.ndarray:
    """Frame-wise (time-varying) filtering, summed over ``parts``; returns ``(n,)``.

    Each part is ``(signal (n,), responses (R, NFFT//2+1), rows)``: ``rows`` (R,) are the frame indices the
    responses belong to (frames elsewhere are silent in that signal), or None for all ``m`` frames."""
    window = np.hanning(_WIN + 1)[:-1].astype(np.float32)  # periodic Hann: overlap-adds to a constant
    spec = np.zeros((m, _NFFT // 2 + 1), dtype=np.complex64)
    for x, h, rows in parts:
        frames = sliding_window_view(np.pad(x.astype(np.float32), (_WIN, _WIN + _HOP)), _WIN)[::_HOP][:m]
        if rows is not None:
            frames = frames[rows]
        buf = np.zeros((frames.shape[0], _NFFT), dtype=np.float32)  # zero-padded so the ringing does not wrap
        buf[:, :_WIN] = frames * window
        if rows is None:
            spec += sfft.rfft(buf) * h
        else:
            spec[rows] += sfft.rfft(buf) * h
    out_frames = sfft.irfft(spec)
    out = np.zeros((m + _NFFT // _HOP) * _HOP, dtype=np.float32)
    for k in range(_NFFT // _HOP):
        out[k * _HOP: k * _HOP + m * _HOP] += out_frames[:, k * _HOP:(k + 1) * _HOP].reshape(-1)
    return out[_WIN: _WIN + n] / (_WIN / (2 * _HOP))


def _smooth(x: np.ndarray, width: float) -> np.ndarray:
    """Centred moving average over ``width`` samples (removes clicks at segment edges)."""
    w = max(1, int(round(width)))
    c = np.cumsum(np.pad(x.astype(np.float64), (w // 2 + 1, w - w // 2)))
    return (c[w:] - c[:-w])[: x.size] / w
