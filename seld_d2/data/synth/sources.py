"""Dry (anechoic, mono) sources for the 13 classes: procedural, class-conditional sound generators,
or a user folder of recorded clips.

No sound library is reachable here, so every class has a small synthesiser with the spectrum and
time structure one would expect (SPEC §5): formant speech with syllables and phrases, clap
trains, telephone rings, laughter bursts, domestic clatter and appliance hum, footsteps, door
creaks and slams, music (chords, bass, drums), melodic instruments (plucked, bowed, piano-like),
running water with bubbles, bells (doorbell, handbell, bicycle bell) and knocks. They are not
meant to fool a listener; they give each class a distinct, learnable signature with energy in the
1.5-4.5 kHz bands the acoustic maps use.

Every signal is scaled to unit *active* RMS: the RMS over the 100 ms frames within 20 dB of the
loudest one, so intermittent sounds (knocks, footsteps) and continuous ones (water) are levelled by
their audible parts, not by their silences.

A user folder replaces the generator for the classes it has clips for::

    DIR/<class>/*.wav|flac|ogg     <class> = id ("3", "03") or name ("Telephone", "water_tap", "door")

Clips are mixed to mono, resampled to 24 kHz (``scipy.signal.resample_poly``), then cut (random
offset) or tiled (with a 20 ms crossfade) to the event's duration.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter, resample_poly

from ...acoustics.audio import SAMPLE_RATE
from ..classes import CLASS_NAMES, NUM_CLASSES, class_index

# Event duration range in seconds per class (scene sampling draws uniformly within it).
CLASS_DURATIONS: tuple[tuple[float, float], ...] = (
    (1.5, 8.0),  # Female speech
    (1.5, 8.0),  # Male speech
    (1.0, 5.0),  # Clapping
    (2.0, 8.0),  # Telephone
    (1.0, 4.0),  # Laughter
    (1.0, 8.0),  # Domestic sounds
    (2.0, 8.0),  # Walk/footsteps
    (0.6, 2.5),  # Door open/close
    (4.0, 20.0),  # Music
    (2.0, 10.0),  # Musical instrument
    (2.0, 10.0),  # Water tap
    (1.0, 5.0),  # Bell
    (0.5, 2.5),  # Knock
)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")

# Vowel formants (Hz, adult male; scaled up for female voices) and their bandwidths.
_VOWELS = np.array(
    [
        (730, 1090, 2440, 3400),  # a
        (270, 2290, 3010, 3700),  # i
        (300, 870, 2240, 3300),  # u
        (530, 1840, 2480, 3500),  # e
        (570, 840, 2410, 3300),  # o
        (660, 1720, 2410, 3400),  # ae
        (490, 1350, 1690, 3300),  # er
    ],
    dtype=np.float64,
)
_FORMANT_BW = np.array([80.0, 100.0, 150.0, 220.0])


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------


def _add(out: np.ndarray, snippet: np.ndarray, start: int) -> None:
    """out[start:start + len] += snippet, clipped to out's bounds."""
    if start >= len(out) or start + len(snippet) <= 0:
        return
    a, b = max(start, 0), min(start + len(snippet), len(out))
    out[a:b] += snippet[a - start : b - start]


def _shaped_noise(n: int, rng: np.random.Generator, fs: int, lo: float, hi: float, tilt: float = 0.0):
    """White noise band-limited to [lo, hi] Hz with smooth (half-octave) edges and a spectral tilt
    of ``tilt`` dB/octave above ``lo``; unit RMS."""
    if n <= 0:
        return np.zeros(0)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    with np.errstate(divide="ignore"):
        lf = np.log2(np.maximum(f, 1.0))
    g = np.clip((lf - math.log2(max(lo, 1.0))) * 2.0 + 1.0, 0.0, 1.0)
    g *= np.clip((math.log2(hi) - lf) * 2.0 + 1.0, 0.0, 1.0)
    g *= 10.0 ** (tilt / 20.0 * np.maximum(lf - math.log2(max(lo, 1.0)), 0.0))
    x = np.fft.irfft(spec * g, n)
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _resonator(x: np.ndarray, freq: float, bw: float, fs: int) -> np.ndarray:
    """Two-pole resonance at ``freq`` with bandwidth ``bw`` (unity gain at the peak, roughly)."""
    r = math.exp(-math.pi * bw / fs)
    theta = 2.0 * math.pi * freq / fs
    return lfilter([1.0 - r], [1.0, -2.0 * r * math.cos(theta), r * r], x)


def _modes(length: int, freqs, decays, amps, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of exponentially decaying sinusoids (modal synthesis of an impact), (length,)."""
    t = np.arange(length) / fs
    freqs, decays, amps = (np.asarray(v, np.float64)[None, :] for v in (freqs, decays, amps))
    phase = rng.uniform(0, 2 * np.pi, freqs.shape)
    return np.sum(
        amps * np.exp(-t[:, None] / decays) * np.sin(2 * np.pi * freqs * t[:, None] + phase), axis=1
    )


def _burst(length: int, tau: float, fs: int, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """A noise burst with an instant attack and exponential decay ``tau`` seconds."""
    t = np.arange(length) / fs
    return _shaped_noise(length, rng, fs, lo, hi) * np.exp(-t / tau)


def _fade(x: np.ndarray, fs: int, seconds: float = 0.005) -> np.ndarray:
    k = min(int(seconds * fs), len(x) // 2)
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, k))
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def _attack_release(n: int, fs: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    a, r = min(int(attack * fs), n), min(int(release * fs), n)
    if a > 0:
        env[:a] = np.linspace(0.0, 1.0, a)
    if r > 0:
        env[n - r :] *= np.linspace(1.0, 0.0, r)
    return env


def _harmonic_tone(
    n: int, fs: int, f0: float | np.ndarray, amps: np.ndarray, rng: np.random.Generator, inharm: float = 0.0
):
    """Additive tone with harmonics k = 1..len(amps) of a (possibly time-varying) f0; harmonics above
    10 kHz are dropped."""
    f0 = np.broadcast_to(np.asarray(f0, np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / fs
    out = np.zeros(n)
    fmax = float(f0.max())
    for k, a in enumerate(amps, start=1):
        stretch = k * math.sqrt(1.0 + inharm * k * k)
        if stretch * fmax > 10000.0:
            break
        out += a * np.sin(stretch * phase + rng.uniform(0, 2 * np.pi))
    return out


def _glottal_pulses(n: int, fs: int, f0: np.ndarray) -> np.ndarray:
    """Impulse train at the instantaneous f0 with a gentle spectral tilt (a glottal source)."""
    phase = np.cumsum(f0) / fs
    pulses = np.zeros(n)
    pulses[1:][np.diff(np.floor(phase)) > 0] = 1.0
    return lfilter([1.0], [1.0, -0.7], pulses)


def _vowel(n: int, fs: int, f0: np.ndarray, formants: np.ndarray, rng, breath: float = 0.05) -> np.ndarray:
    """A voiced segment: glottal pulses (plus breath noise) through a cascade of formant
    resonances, unit RMS."""
    src = _glottal_pulses(n, fs, f0)
    src = src / (np.sqrt(np.mean(src * src)) + 1e-12) + breath * rng.standard_normal(n)
    y = src
    for f, bw in zip(formants, _FORMANT_BW, strict=True):
        y = _resonator(y, float(f), float(bw), fs)
    return y / (np.sqrt(np.mean(y * y)) + 1e-12)


# ----------------------------------------------------------------------------------------------
# class generators: (num_samples, rng, fs) -> signal
# ----------------------------------------------------------------------------------------------


def _speech(n: int, rng: np.random.Generator, fs: int, female: bool) -> np.ndarray:
    out = np.zeros(n)
    f0_base = rng.uniform(175, 245) if female else rng.uniform(90, 140)
    fscale = rng.uniform(1.12, 1.22) if female else rng.uniform(0.95, 1.05)
    t = int(rng.uniform(0.0, 0.05) * fs)
    while t < n:
        n_syl = int(rng.integers(3, 10))
        decl = rng.uniform(0.1, 0.25)  # pitch declination over the phrase
        for s in range(n_syl):
            if t >= n:
                break
            if rng.random() < 0.45:  # a consonant: fricative or plosive burst
                if rng.random() < 0.6:
                    m = int(rng.uniform(0.04, 0.11) * fs)
                    fr = _shaped_noise(m, rng, fs, rng.uniform(2000, 3500), rng.uniform(6000, 9000))
                    _add(out, 0.3 * fr * np.hanning(m), t)
                    t += m
                else:
                    m = int(0.015 * fs)
                    _add(out, 0.5 * _burst(m, 0.004, fs, rng, 500, 6000), t)
                    t += m + int(0.01 * fs)
            m = int(rng.uniform(0.1, 0.26) * fs)
            prog = s / max(n_syl - 1, 1)
            f0a = f0_base * (1.0 + 0.12 * rng.standard_normal()) * (1.0 - decl * prog)
            f0b = f0a * rng.uniform(0.85, 1.15)
            f0 = np.linspace(f0a, f0b, m) * (1.0 + 0.01 * np.sin(2 * np.pi * 5.5 * np.arange(m) / fs))
            vowel = _VOWELS[rng.integers(len(_VOWELS))] * fscale * rng.uniform(0.95, 1.05, 4)
            syl = _vowel(m, fs, f0, vowel, rng) * _attack_release(m, fs, 0.02, 0.04) * rng.uniform(0.6, 1.0)
            _add(out, syl, t)
            t += m + int(rng.uniform(0.0, 0.05) * fs)
        t += int(rng.uniform(0.08, 0.35) * fs)  # phrase pause
    return out


def _female_speech(n, rng, fs):
    return _speech(n, rng, fs, female=True)


def _male_speech(n, rng, fs):
    return _speech(n, rng, fs, female=False)


def _clapping(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    applause = rng.random() < 0.3
    rate = rng.uniform(15, 35) if applause else rng.uniform(2.5, 5.0)
    centre = rng.uniform(900, 2200)
    t = rng.uniform(0, 0.05)
    m = int(0.08 * fs)
    while t * fs < n:
        clap = _burst(m, rng.uniform(0.005, 0.012), fs, rng, 300, 9000)
        clap = 0.5 * clap + _resonator(clap, centre * rng.uniform(0.85, 1.15), 900, fs) * 3.0
        _add(out, clap * rng.uniform(0.6, 1.0), int(t * fs))
        t += rng.exponential(1.0 / rate) if applause else (1.0 / rate) * rng.uniform(0.9, 1.1)
    return out


def _telephone(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    t_all = np.arange(n) / fs
    if rng.random() < 0.5:  # electromechanical bell ring: two tones trilled at ~20 Hz
        f1 = rng.uniform(900, 1500)
        f2 = f1 * rng.uniform(1.15, 1.35)
        tone = _harmonic_tone(n, fs, f1, np.array([1, 0.5, 0.3, 0.2]), rng, inharm=0.002)
        tone += _harmonic_tone(n, fs, f2, np.array([0.8, 0.4, 0.2]), rng, inharm=0.002)
        trill = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * rng.uniform(16, 25) * t_all))
        on, off = rng.uniform(0.8, 2.0), rng.uniform(0.2, 0.45)
        carrier = tone * lfilter([0.1], [1, -0.9], trill)
    else:  # electronic ringtone: warbling square-ish beeps
        fa, fb = rng.uniform(700, 1300), rng.uniform(1300, 2500)
        warble = rng.uniform(10, 20)
        sel = np.floor(t_all * warble) % 2
        f0 = np.where(sel > 0, fa, fb)
        carrier = _harmonic_tone(n, fs, f0, np.array([1, 0, 0.33, 0, 0.2]), rng)
        on, off = rng.uniform(0.3, 0.9), rng.uniform(0.1, 0.3)
    period = on + off
    gate = ((t_all % period) < on).astype(np.float64)
    gate = lfilter([0.02], [1, -0.98], gate)  # ~2 ms edges
    out += carrier * gate
    return out


def _laughter(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    f0_base = rng.uniform(220, 380) if rng.random() < 0.5 else rng.uniform(130, 230)
    t = int(rng.uniform(0, 0.05) * fs)
    while t < n:
        n_ha = int(rng.integers(3, 9))
        for k in range(n_ha):
            m = int(rng.uniform(0.07, 0.14) * fs)
            f0 = f0_base * (1.0 - 0.04 * k) * np.linspace(1.05, 0.9, m) * rng.uniform(0.9, 1.1)
            vowel = _VOWELS[0] * rng.uniform(1.0, 1.2) * rng.uniform(0.95, 1.05, 4)
            ha = _vowel(m, fs, f0, vowel, rng, breath=0.4) * _attack_release(m, fs, 0.01, 0.05)
            asp = _shaped_noise(int(0.05 * fs), rng, fs, 1000, 7000) * 0.6
            _add(out, asp * np.hanning(len(asp)), t)
            _add(out, ha * rng.uniform(0.6, 1.0), t + len(asp) // 2)
            t += m + int(rng.uniform(0.04, 0.09) * fs)
        # inhalation between bursts
        m = int(rng.uniform(0.15, 0.35) * fs)
        _add(out, 0.05 * _shaped_noise(m, rng, fs, 1000, 5000) * np.hanning(m), t)
        t += m
    return out


def _domestic(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    if rng.random() < 0.3:  # a running appliance: motor hum plus airflow noise
        t_all = np.arange(n) / fs
        hum = _harmonic_tone(n, fs, rng.uniform(50, 120), 1.0 / np.arange(1, 30) ** 0.7, rng)
        air = _shaped_noise(n, rng, fs, rng.uniform(300, 800), rng.uniform(4000, 8000), tilt=-2.0)
        flutter = 1.0 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t_all)
        out += (0.3 * hum + air) * flutter * _attack_release(n, fs, 0.2, 0.2)
        rate = rng.uniform(0.5, 2.0)  # with an occasional clunk
    else:
        rate = rng.uniform(3.0, 10.0)  # clatter of dishes and cutlery
    t = rng.uniform(0, 0.1)
    while t * fs < n:
        m = int(0.3 * fs)
        k = int(rng.integers(3, 7))
        if rng.random() < 0.7:  # small hard objects: bright, inharmonic modes
            freqs = rng.uniform(1500, 7000, k)
            decays = rng.uniform(0.02, 0.15, k)
        else:  # pots, plates: lower modes
            freqs = rng.uniform(300, 2500, k)
            decays = rng.uniform(0.05, 0.25, k)
        hit = _modes(m, freqs, decays, rng.uniform(0.3, 1.0, k), fs, rng)
        hit += 0.5 * _burst(m, 0.003, fs, rng, 500, 9000)
        _add(out, hit * rng.uniform(0.4, 1.0), int(t * fs))
        t += rng.exponential(1.0 / rate)
    return out


def _footsteps(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    interval = rng.uniform(0.42, 0.65)
    hard = rng.random() < 0.5
    t = rng.uniform(0, 0.1)
    m = int(0.25 * fs)
    while t * fs < n:
        heel = _modes(m, [rng.uniform(60, 120)], [0.03], [1.0], fs, rng)
        heel += _resonator(_burst(m, 0.015, fs, rng, 100, 3000), rng.uniform(300, 800), 400, fs) * 2.0
        if hard:
            heel += _modes(
                m, rng.uniform(1500, 4000, 3), rng.uniform(0.005, 0.02, 3), [0.3, 0.2, 0.2], fs, rng
            )
        heel += 0.5 * _burst(m, 0.008, fs, rng, 1000, 6000)
        toe = _burst(int(0.12 * fs), rng.uniform(0.02, 0.05), fs, rng, 1500, 7000) * rng.uniform(0.4, 0.8)
        start = int(t * fs)
        _add(out, heel * rng.uniform(0.7, 1.0), start)
        _add(out, toe, start + int(rng.uniform(0.04, 0.08) * fs))
        t += interval * rng.uniform(0.92, 1.08)
    return out


def _door(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    slam_at = max(n - int(rng.uniform(0.3, 0.5) * fs), 0)
    creaky = rng.random() < 0.6
    if slam_at > int(0.2 * fs) and not creaky:  # latch click, then the swish of the door moving
        m = slam_at
        swish = _shaped_noise(m, rng, fs, 300, 4000) * np.hanning(m) * 0.2
        swish[: int(0.3 * fs)] += _modes(
            min(int(0.3 * fs), m), rng.uniform(1500, 4500, 3), [0.01] * 3, [1.0] * 3, fs, rng
        )[: min(int(0.3 * fs), m)]
        out[:m] += swish
    if slam_at > int(0.2 * fs) and creaky:  # a creaking hinge before the slam
        m = slam_at
        t_all = np.arange(m) / fs
        rate = rng.uniform(30, 80) * (1.0 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t_all))
        pulses = _glottal_pulses(m, fs, rate)
        creak = sum(
            _resonator(pulses, rng.uniform(lo, hi), 150, fs)
            for lo, hi in ((600, 1000), (1400, 2200), (2600, 3800))
        )
        creak /= np.sqrt(np.mean(creak * creak)) + 1e-12
        out[:m] += 0.4 * creak * _attack_release(m, fs, 0.05, 0.05)
    m = min(int(0.5 * fs), n - slam_at)
    if m > 0:
        slam = _modes(m, [rng.uniform(50, 90)], [0.08], [1.0], fs, rng)
        slam += _burst(m, 0.03, fs, rng, 100, 8000)
        k = 6
        slam += _modes(
            m, rng.uniform(300, 3000, k), rng.uniform(0.05, 0.2, k), rng.uniform(0.1, 0.4, k), fs, rng
        )
        if rng.random() < 0.6:  # latch click
            click = _modes(m, rng.uniform(2000, 5000, 3), [0.01] * 3, [0.3] * 3, fs, rng)
            slam += np.roll(click, int(0.02 * fs))
        _add(out, slam, slam_at)
    return out


_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])  # major scale, semitones


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _music(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    key = 48 + int(rng.integers(0, 12))
    beat = 60.0 / rng.uniform(80, 140)
    bar = int(4 * beat * fs)
    progression = [0, 5, 3, 4] if rng.random() < 0.5 else [0, 4, 5, 3]
    amps = 1.0 / np.arange(1, 13) ** rng.uniform(0.6, 1.0)
    for b, start in enumerate(range(0, n, bar)):
        m = min(bar, n - start)
        degree = progression[b % len(progression)]
        root = key + _SCALE[degree % 7]
        chord = [
            root,
            key + _SCALE[(degree + 2) % 7] + 12 * ((degree + 2) // 7),
            key + _SCALE[(degree + 4) % 7],
        ]
        pad = sum(
            _harmonic_tone(m, fs, _midi_hz(note + 12) * rng.uniform(0.998, 1.002), amps, rng)
            for note in chord
        )
        out[start : start + m] += 0.25 * pad * _attack_release(m, fs, 0.05, 0.1)
        for i in range(8):  # eighth notes: hi-hat; beats 1 and 3 kick and bass; 2 and 4 snare
            s = start + int(i * beat / 2 * fs)
            if s >= n:
                break
            _add(out, 0.3 * _burst(int(0.06 * fs), 0.02, fs, rng, 4000, 10000), s)
            if i in (0, 4):
                k = int(0.3 * fs)
                tk = np.arange(k) / fs
                kick = np.sin(2 * np.pi * np.cumsum(60 + 80 * np.exp(-tk / 0.03)) / fs) * np.exp(-tk / 0.12)
                _add(out, 0.8 * kick, s)
                bass = _harmonic_tone(
                    int(beat * 2 * fs), fs, _midi_hz(root - 12), np.array([1, 0.5, 0.3]), rng
                )
                _add(out, 0.4 * bass * _attack_release(len(bass), fs, 0.01, 0.1), s)
            if i in (2, 6):
                k = int(0.2 * fs)
                snare = _burst(k, 0.05, fs, rng, 1000, 9000) + _modes(k, [185.0], [0.05], [0.7], fs, rng)
                _add(out, 0.5 * snare, s)
    return out


def _instrument(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    kind = int(rng.integers(0, 3))  # 0 plucked, 1 bowed/wind, 2 piano-like
    key = 55 + int(rng.integers(0, 17))
    t = 0
    degree = int(rng.integers(0, 7))
    while t < n:
        dur = rng.choice([0.15, 0.25, 0.35, 0.5, 0.7]) * rng.uniform(0.9, 1.1)
        degree = int(np.clip(degree + rng.integers(-2, 3), -3, 10))
        f0 = _midi_hz(key + _SCALE[degree % 7] + 12 * (degree // 7))
        m = int(dur * fs)
        if kind == 1:  # sustained with vibrato, odd-harmonic-rich (clarinet/flute-like)
            tn = np.arange(m) / fs
            f = f0 * (1.0 + 0.006 * np.sin(2 * np.pi * 5.5 * tn))
            amps = np.array([1.0, 0.15, 0.6, 0.1, 0.35, 0.08, 0.2, 0.05, 0.1])
            note = _harmonic_tone(m, fs, f, amps, rng) * _attack_release(m, fs, 0.04, 0.06)
        else:  # struck or plucked: decaying harmonics (piano-like with stretched partials)
            tail = int(m + 0.3 * fs)
            tn = np.arange(tail) / fs
            k = np.arange(1, 13)
            inharm = 0.0004 if kind == 2 else 0.0
            tau0 = rng.uniform(0.4, 1.2)
            note = np.zeros(tail)
            for kk in k:
                fk = kk * f0 * math.sqrt(1.0 + inharm * kk * kk)
                if fk > 10000:
                    break
                note += (
                    (1.0 / kk)
                    * np.exp(-tn / (tau0 / kk**0.7))
                    * np.sin(2 * np.pi * fk * tn + rng.uniform(0, 6.3))
                )
            note *= _attack_release(tail, fs, 0.002, 0.05)
        _add(out, note * rng.uniform(0.6, 1.0), t)
        t += m
    return out


def _water_tap(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    t_all = np.arange(n) / fs
    out = _shaped_noise(n, rng, fs, rng.uniform(300, 800), rng.uniform(6000, 9000), tilt=-1.5)
    out = 0.5 * out + _resonator(out, rng.uniform(1500, 3500), 2000, fs) * 2.0
    out *= 1.0 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t_all + rng.uniform(0, 6.3))
    rate = rng.uniform(150, 400)  # bubbles: short rising chirps
    count = int(rate * n / fs)
    m = int(0.03 * fs)
    tb = np.arange(m) / fs
    f0 = rng.uniform(800, 4000, count)
    tau = rng.uniform(0.003, 0.01, count)
    rise = rng.uniform(5, 40, count)
    amps = rng.uniform(0.2, 1.0, count)
    starts = rng.integers(0, max(n - 1, 1), count)
    phase = 2 * np.pi * f0[:, None] * (tb[None, :] + 0.5 * rise[:, None] * tb[None, :] ** 2)
    bubbles = amps[:, None] * np.sin(phase) * np.exp(-tb[None, :] / tau[:, None])
    for s, b in zip(starts, bubbles, strict=True):
        _add(out, 0.6 * b, int(s))
    return out * _attack_release(n, fs, 0.1, 0.1)


_BELL_RATIOS = np.array([0.5, 1.0, 1.183, 1.506, 2.0, 2.514, 2.662, 3.011, 4.166, 5.433])


def _bell(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    kind = int(rng.integers(0, 3))  # 0 doorbell ding-dong, 1 handbell, 2 bicycle-bell trill
    if kind == 2:
        f = rng.uniform(2500, 4000)
        rate = rng.uniform(10, 15)
        t = 0.0
        while t * fs < n:
            for _ in range(int(rng.integers(4, 10))):  # a trill, then a short pause
                m = int(0.4 * fs)
                hit = _modes(m, f * np.array([1.0, 1.48, 2.03]), [0.25, 0.15, 0.1], [1.0, 0.6, 0.4], fs, rng)
                _add(out, hit * rng.uniform(0.7, 1.0), int(t * fs))
                t += 1.0 / rate
            t += rng.uniform(0.2, 0.4)
        return out
    f = rng.uniform(500, 1500)
    tau0 = rng.uniform(1.0, 2.5)
    t = 0.0
    strike = 0
    while t * fs < n:
        m = min(int(3 * tau0 * fs), n)
        if kind == 0:
            ratios = np.array([1.0, 2.76, 5.40]) * (1.0 if strike % 2 == 0 else 0.794)  # a major third down
            amps, decays = np.array([1.0, 0.4, 0.2]), tau0 / np.array([1.0, 2.0, 3.0])
        else:
            ratios = _BELL_RATIOS
            amps = rng.uniform(0.3, 1.0, len(ratios))
            decays = tau0 / ratios**0.8
        freqs = f * ratios
        keep = freqs < 10000
        hit = _modes(m, freqs[keep], decays[keep], amps[keep], fs, rng)
        _add(out, hit, int(t * fs))
        strike += 1
        t += rng.uniform(0.5, 0.8) if kind == 0 else rng.uniform(0.6, 1.5)
    return out


def _knock(n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    out = np.zeros(n)
    panel = rng.uniform(150, 400) * np.array([1.0, 2.3, 3.9, 5.6])
    t = rng.uniform(0, 0.05)
    while t * fs < n:
        for _ in range(int(rng.integers(2, 6))):
            m = int(0.15 * fs)
            hit = _modes(
                m, panel * rng.uniform(0.97, 1.03, 4), rng.uniform(0.01, 0.04, 4), [1, 0.6, 0.4, 0.3], fs, rng
            )
            hit += 1.0 * _burst(m, 0.005, fs, rng, 1000, 6000)
            hit += _modes(
                m, rng.uniform(1500, 3500, 3), rng.uniform(0.005, 0.015, 3), [0.4, 0.3, 0.2], fs, rng
            )
            _add(out, hit * rng.uniform(0.7, 1.0), int(t * fs))
            t += rng.uniform(0.12, 0.25)
        t += rng.uniform(0.4, 0.8)
    return out


_GENERATORS: tuple[Callable[[int, np.random.Generator, int], np.ndarray], ...] = (
    _female_speech,
    _male_speech,
    _clapping,
    _telephone,
    _laughter,
    _domestic,
    _footsteps,
    _door,
    _music,
    _instrument,
    _water_tap,
    _bell,
    _knock,
)


def active_rms(x: np.ndarray, fs: int = SAMPLE_RATE, floor_db: float = 20.0) -> float:
    """RMS over the 100 ms frames within ``floor_db`` of the loudest frame (0 for silence)."""
    hop = fs // 10
    k = max(len(x) // hop, 1)
    frames = np.resize(x, k * hop).reshape(k, hop) if len(x) >= hop else x[None, :]
    e = np.mean(frames * frames, axis=1)
    if e.max() <= 0:
        return 0.0
    keep = e >= e.max() * 10.0 ** (-floor_db / 10.0)
    return float(np.sqrt(np.mean(e[keep])))


def normalise(x: np.ndarray, fs: int = SAMPLE_RATE) -> np.ndarray:
    """Scale to unit :func:`active_rms` (silence stays silence)."""
    r = active_rms(x, fs)
    return x / r if r > 0 else x


def procedural_source(
    category_id: int, num_samples: int, rng: np.random.Generator, fs: int = SAMPLE_RATE
) -> np.ndarray:
    """A procedural dry sound of a class, float64 (num_samples,), unit active RMS, 5 ms fades."""
    if not 0 <= category_id < NUM_CLASSES:
        raise ValueError(f"category_id {category_id} is out of range 0-{NUM_CLASSES - 1}")
    x = _GENERATORS[category_id](int(num_samples), rng, fs)[:num_samples]
    x = np.asarray(x, np.float64)
    return normalise(_fade(x, fs), fs)


# ----------------------------------------------------------------------------------------------
# user clips
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _load_clip(path: str, fs: int) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float64", always_2d=True)
    x = audio.mean(axis=1)
    if rate != fs:
        g = math.gcd(int(rate), int(fs))
        x = resample_poly(x, fs // g, int(rate) // g)
    return np.ascontiguousarray(x)


def _fit_length(x: np.ndarray, n: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    """Cut a random n-sample window, or tile with a 20 ms crossfade when the clip is shorter."""
    if len(x) >= n:
        start = int(rng.integers(0, len(x) - n + 1))
        return x[start : start + n].copy()
    xf = min(int(0.02 * fs), len(x) // 4)
    out = np.zeros(n)
    ramp = np.linspace(0.0, 1.0, xf) if xf > 0 else np.zeros(0)
    pos = 0
    while pos < n:
        piece = x.copy()
        if xf > 0 and pos > 0:
            piece[:xf] *= ramp
        if xf > 0:
            piece[-xf:] *= ramp[::-1]
        _add(out, piece, pos)
        pos += len(x) - xf
    return out


class DrySourceLibrary:
    """Dry clips per class from ``root/<class>/*.wav|flac|ogg``.

    Args:
        root: the folder; each subfolder named by a class id or name (see :func:`class_index`).

    Raises:
        FileNotFoundError: ``root`` is not a folder; ValueError: a subfolder name is not a class,
        or no subfolder holds any audio file.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: dry-source folder not found")
        clips: dict[int, list[str]] = {}
        for sub in sorted(p for p in self.root.iterdir() if p.is_dir()):
            try:
                cid = class_index(sub.name)
            except ValueError as err:
                raise ValueError(f"{sub}: folder name is not a class ({err})") from None
            files = sorted(str(p) for p in sub.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
            if files:
                clips.setdefault(cid, []).extend(files)
        if not clips:
            raise ValueError(f"{self.root}: no audio files in any <class>/ subfolder")
        self.clips = {cid: sorted(files) for cid, files in clips.items()}

    @property
    def classes(self) -> list[int]:
        return sorted(self.clips)

    def draw(
        self, category_id: int, num_samples: int, rng: np.random.Generator, fs: int = SAMPLE_RATE
    ) -> np.ndarray | None:
        """A clip of the class fitted to ``num_samples`` and normalised, or None when the library
        has no clip of that class."""
        files = self.clips.get(category_id)
        if not files:
            return None
        path = files[int(rng.integers(len(files)))]
        try:
            x = _load_clip(path, fs)
        except Exception as err:  # soundfile raises several types for unreadable files
            raise ValueError(f"{path}: cannot read dry source ({err})") from None
        if len(x) == 0 or not np.all(np.isfinite(x)):
            raise ValueError(f"{path}: empty or non-finite audio")
        return normalise(_fade(_fit_length(x, int(num_samples), rng, fs), fs), fs)


def dry_source(
    category_id: int,
    num_samples: int,
    rng: np.random.Generator,
    library: DrySourceLibrary | None = None,
    fs: int = SAMPLE_RATE,
) -> np.ndarray:
    """A user clip of the class when ``library`` has one, otherwise a procedural sound."""
    if library is not None:
        x = library.draw(category_id, num_samples, rng, fs)
        if x is not None:
            return x
    return procedural_source(category_id, num_samples, rng, fs)


__all__ = [
    "AUDIO_EXTENSIONS",
    "CLASS_DURATIONS",
    "CLASS_NAMES",
    "DrySourceLibrary",
    "active_rms",
    "dry_source",
    "normalise",
    "procedural_source",
]
