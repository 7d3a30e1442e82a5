"""Deterministic synthetic music clips for the demo and the tests.

Each "genre" differs the way real genres do: tempo range, rhythm pattern (which drum hits
where on the beat grid), timbre (harmonic content, distortion, envelopes) and noise texture.
Clips are written as 16-bit PCM WAV files in GTZAN's ``<genre>/<track>.wav`` layout.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from genre_classification.data.dvc_repo import add_and_push, drop_local_copy, init_data_repo


@dataclass(frozen=True)
class GenreStyle:
    tempo_bpm: tuple[float, float]
    # Drum hits per 16th-note step of one bar: (kick, snare, hat) step indices.
    kick: tuple[int, ...]
    snare: tuple[int, ...]
    hat: tuple[int, ...]
    harmonics: int  # number of harmonics of the tonal part
    harmonic_decay: float  # amplitude ratio between successive harmonics
    distortion: float  # 0 = clean, larger = harder clipping
    chord_steps: tuple[int, ...]  # steps where the chord/pad is (re)struck
    note_seconds: float  # length of each tonal note
    noise_level: float  # broadband noise texture
    swing: float = 0.0  # delay of off-beat 8ths, as a fraction of a 16th


GENRES: dict[str, GenreStyle] = {
    "classical": GenreStyle((60, 76), (), (), (), 6, 0.55, 0.0, (0, 8), 1.6, 0.002),
    "disco": GenreStyle(
        (116, 126), (0, 4, 8, 12), (4, 12), (2, 6, 10, 14), 4, 0.5, 0.0, (2, 6, 10, 14), 0.12, 0.01
    ),
    "hiphop": GenreStyle(
        (84, 94), (0, 3, 10), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14), 2, 0.3, 0.0, (0,), 0.9, 0.006
    ),
    "jazz": GenreStyle(
        (126, 150), (0,), (), (0, 4, 6, 8, 12, 14), 5, 0.6, 0.0, (0, 4, 8, 12), 0.35, 0.004, 0.35
    ),
    "metal": GenreStyle(
        (168, 196),
        (0, 2, 4, 6, 8, 10, 12, 14),
        (4, 12),
        tuple(range(16)),
        8,
        0.85,
        6.0,
        tuple(range(0, 16, 2)),
        0.1,
        0.05,
    ),
    "reggae": GenreStyle(
        (68, 78), (8,), (8,), (2, 6, 10, 14), 3, 0.45, 0.0, (2, 6, 10, 14), 0.08, 0.004
    ),
}


def _kick(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.18 * sr)) / sr
    freq = 45 + 80 * np.exp(-t * 30)
    return np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t * 18)


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.16 * sr)) / sr
    return (0.7 * rng.standard_normal(t.size) + 0.4 * np.sin(2 * np.pi * 185 * t)) * np.exp(-t * 28)


def _hat(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.05 * sr)) / sr
    return np.diff(rng.standard_normal(t.size + 1)) * 0.35 * np.exp(-t * 90)


def _note(freq: float, seconds: float, style: GenreStyle, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    tone = sum(
        style.harmonic_decay**k * np.sin(2 * np.pi * freq * (k + 1) * t)
        for k in range(style.harmonics)
    )
    attack = np.minimum(1.0, t / (0.2 if style.note_seconds > 1 else 0.005))
    tone = tone * attack * np.exp(-t * (1.5 / style.note_seconds))
    if style.distortion:
        tone = np.tanh(style.distortion * tone)
    return tone


def _place(signal: np.ndarray, sound: np.ndarray, start: int, gain: float) -> None:
    if start >= signal.size:
        return
    end = min(signal.size, start + sound.size)
    signal[start:end] += gain * sound[: end - start]


def synthesize_clip(genre: str, seconds: float, sr: int, seed: int) -> np.ndarray:
    """One mono float32 clip in [-1, 1] of the given genre, fully determined by ``seed``."""
    style = GENRES[genre]
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    signal = np.zeros(n)
    tempo = rng.uniform(*style.tempo_bpm)
    step = 60.0 / tempo / 4  # a 16th note, in seconds
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    chord = root * np.array([1.0, 2 ** (4 / 12), 2 ** (7 / 12)])  # major triad
    drums = {
        "kick": (_kick, style.kick, 1.0),
        "snare": (_snare, style.snare, 0.6),
        "hat": (_hat, style.hat, 0.3),
    }
    sounds = {name: make(sr, rng) for name, (make, _, _) in drums.items()}
    n_steps = int(seconds / step) + 1
    for i in range(n_steps):
        pos = i % 16
        offset = style.swing * step if pos % 4 == 2 else 0.0
        start = int((i * step + offset) * sr)
        for name, (_, steps, gain) in drums.items():
            if pos in steps:
                _place(signal, sounds[name], start, gain * rng.uniform(0.8, 1.0))
        if pos in style.chord_steps:
            # Walk through the chord tones; classical adds a slow vibrato-free melody.
            freq = chord[(i // 4) % 3] * (2 if style.harmonics > 5 else 1)
            _place(signal, _note(freq, style.note_seconds, style, sr), start, 0.5)
    t = np.arange(n) / sr
    signal += style.noise_level * rng.standard_normal(n)
    signal *= 1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    peak = np.max(np.abs(signal)) or 1.0
    return (signal / peak * rng.uniform(0.5, 0.9)).astype(np.float32)


def make_demo_dataset(
    out_dir: str | Path,
    clips_per_genre: int = 20,
    seconds: float = 6.0,
    sample_rate: int = 22050,
    seed: int = 0,
    genres: list[str] | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<genre>/<genre>.<nnnnn>.wav`` clips (GTZAN's naming); return the paths."""
    out_dir = Path(out_dir)
    paths = []
    for g_index, genre in enumerate(genres or sorted(GENRES)):
        (out_dir / genre).mkdir(parents=True, exist_ok=True)
        for i in range(clips_per_genre):
            clip = synthesize_clip(
                genre, seconds, sample_rate, seed=seed * 1_000_003 + g_index * 1000 + i
            )
            path = out_dir / genre / f"{genre}.{i:05d}.wav"
            sf.write(path, clip, sample_rate, subtype="PCM_16")
            paths.append(path)
    return paths


# The tiny data set of the small test configuration (.test/config/config.yaml, the end-to-end
# tests): seconds long enough for a few 1.5 s segments, and the files to quarantine.
TINY_DATA = {
    "clips_per_genre": 5,
    "seconds": 3.5,
    "genres": ["classical", "disco", "metal"],
    "bad_files": True,
}

# Files the workflow must quarantine (never crash on): written by ``write_bad_files``.
BAD_FILES = {
    "classical/broken.wav": "cannot decode",
    "disco/short.wav": "too short",
    "metal/empty.wav": "empty",
}


def write_bad_files(root: str | Path) -> None:
    """The ``BAD_FILES`` below ``root``: an undecodable, a too short and an empty file."""
    root = Path(root)
    for name in BAD_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / "classical" / "broken.wav").write_bytes(b"RIFF\x00\x01garbage" * 50)
    sf.write(root / "disco" / "short.wav", np.zeros(22050, dtype=np.float32), 22050)
    (root / "metal" / "empty.wav").write_bytes(b"")


def make_demo_repo(
    repo: str | Path,
    remote: str | Path,
    target: str = "genres",
    clips_per_genre: int = 20,
    seconds: float = 6.0,
    seed: int = 0,
    genres: list[str] | None = None,
    bad_files: bool = False,
    force: bool = False,
) -> str:
    """A git + DVC data repository ``repo`` whose directory ``target`` holds demo clips (and the
    ``BAD_FILES`` with ``bad_files``), pushed to the local DVC remote ``remote``, with the
    workspace copy and cache dropped: the workflow's ``dvc pull`` really fetches. An existing
    one is kept unless ``force``. Returns what was done, in one line."""

    repo, remote = Path(repo), Path(remote)
    if (repo / f"{target}.dvc").exists() and remote.is_dir() and not force:
        return f"demo data already versioned in {repo} (remote {remote}); --force recreates it"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(remote, ignore_errors=True)
    init_data_repo(repo, remote)
    paths = make_demo_dataset(repo / target, clips_per_genre, seconds, seed=seed, genres=genres)
    if bad_files:
        write_bad_files(repo / target)
    commit = add_and_push(repo, target, f"Demo audio: {len(paths)} synthetic clips")
    drop_local_copy(repo, target)
    return f"{len(paths)} clips in {repo}/{target}.dvc (git {commit[:8]}), pushed to {remote}"
