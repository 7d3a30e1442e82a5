"""Real collections as they come: every common format, odd layouts and names, any sample rate
and channel count, silence, and full-length tracks (only an excerpt is decoded)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import SMALL_FEATURES, skip_unless_required
from genre_classification.data.audio_source import scan_directory
from genre_classification.features.features import load_audio, log_mel_segments

PARAMS = SMALL_FEATURES
EXTENSIONS = ["wav", "flac", "ogg", "opus", "mp3", "m4a", "aac", "aiff", "aif", "au"]


def music(seconds: float, rate: int = 44100) -> np.ndarray:
    """A chord with a little noise: energy across the mel bands, like music."""
    t = np.arange(int(seconds * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6, 880.0, 2500.0))
    noise = np.random.default_rng(0).standard_normal(t.size)
    return (0.15 * chord + 0.02 * noise).astype(np.float32)


def test_odd_layouts_and_names_are_skipped_with_their_reason(tmp_path):
    root = tmp_path / "audio"
    for folder in ("rock", "rock/live", "jazz", "empty"):
        (root / folder).mkdir(parents=True)
    clip = music(1.5)
    sf.write(root / "rock" / "loud.WAV", clip, 44100)  # upper-case extension: read
    sf.write(root / "jazz" / "Café del Mar – 01.Flac", clip, 44100)  # unicode, spaces: read
    sf.write(root / "rock" / "live" / "encore.wav", clip, 44100)  # nested: skipped
    sf.write(root / "stray.wav", clip, 44100)  # not in a genre folder: skipped
    (root / "jazz" / "cover.jpg").write_bytes(b"\xff\xd8")  # not audio: ignored
    bad_name = os.path.join(os.fsencode(root / "rock"), b"caf\xe9.wav")  # Latin-1, not UTF-8
    with open(bad_name, "wb") as handle:
        handle.write((root / "rock" / "loud.WAV").read_bytes())

    collection = scan_directory(root, EXTENSIONS)
    assert [(f.genre, f.track) for f in collection.files] == [
        ("jazz", "Café del Mar – 01"),
        ("rock", "loud"),
    ]
    reasons = {row["path"].removeprefix(f"{root}/"): row["reason"] for row in collection.skipped}
    assert reasons == {
        "empty": "no audio files (.aac, .aif, .aiff, .au, .flac, .m4a, .mp3, .ogg, .opus, .wav) "
        "in this genre folder",
        "rock/caf\\xe9.wav": "file name is not valid UTF-8: rename it",
        "rock/live/encore.wav": "in a sub-folder of its <genre> folder: not read (files are read "
        "as <genre>/<file>)",
        "stray.wav": "not in a <genre> folder: not read",
    }


@pytest.mark.parametrize("rate", [8000, 11025, 44100, 96000, 192000])
@pytest.mark.parametrize("channels", [1, 2, 8])
def test_any_rate_and_channel_count(tmp_path, rate, channels):
    path = tmp_path / "clip.flac" if rate <= 96000 else tmp_path / "clip.wav"
    sf.write(path, np.repeat(music(2.0, rate)[:, None], channels, axis=1), rate)
    audio = load_audio(path, PARAMS)
    assert audio.size == pytest.approx(2.0 * 22050, abs=4)
    assert np.isfinite(log_mel_segments(audio, PARAMS)).all()


def test_silence_is_accepted_and_finite(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(3 * 22050, dtype=np.float32), 22050)
    segments = log_mel_segments(load_audio(tmp_path / "silence.wav", PARAMS), PARAMS)
    assert segments.shape[0] == 3 and np.isfinite(segments).all()


def test_full_length_track_decodes_only_its_middle_excerpt(tmp_path):
    rate = 22050
    track = np.zeros(600 * rate, dtype=np.float32)  # 10 minutes of silence...
    track[290 * rate : 310 * rate] = music(20.0, rate)  # ...with music in the middle 20 s
    sf.write(tmp_path / "song.wav", track, rate)
    excerpt = load_audio(
        tmp_path / "song.wav", PARAMS.__class__(**{**PARAMS.__dict__, "excerpt_seconds": 20})
    )
    assert excerpt.size == 20 * rate
    assert np.abs(excerpt).mean() > 0.05  # the music, not the silence around it
    whole = load_audio(
        tmp_path / "song.wav", PARAMS.__class__(**{**PARAMS.__dict__, "excerpt_seconds": 0})
    )
    assert whole.size == 600 * rate


def encode(wav, out) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(wav), str(out)], check=True, capture_output=True
    )


# Mean absolute difference of the per-band mean log-mel (dB) against the WAV original.
TOLERANCE_DB = {"flac": 0.01, "aiff": 0.01, "aif": 0.01, "au": 0.05, "ogg": 1.5, "opus": 2.0,
                "mp3": 1.5, "m4a": 1.5, "aac": 1.5}  # fmt: skip


def test_every_format_decodes_to_the_log_mel_of_its_wav_original(tmp_path):
    if shutil.which("ffmpeg") is None:
        skip_unless_required("ffmpeg not installed (make system-deps installs it)")
    wav = tmp_path / "original.wav"
    sf.write(wav, music(6.0), 44100, subtype="PCM_16")
    reference = log_mel_segments(load_audio(wav, PARAMS), PARAMS).mean(axis=(0, 2))
    for ext, tolerance in TOLERANCE_DB.items():
        out = tmp_path / f"clip.{ext}"
        encode(wav, out)
        audio = load_audio(out, PARAMS)
        assert audio.size == pytest.approx(6.0 * 22050, rel=0.02), ext
        bands = log_mel_segments(audio, PARAMS).mean(axis=(0, 2))
        # Lossy codecs drop content above their cut-off: compare the bands below 11 kHz.
        difference = np.abs(bands - reference)[:56].mean()
        assert difference < tolerance, f"{ext}: {difference:.3f} dB"


MISSING_FFMPEG = """
import sys
from genre_classification.features.features import AudioError, FeatureParams, load_audio
try:
    load_audio(sys.argv[1], FeatureParams())
except AudioError as error:
    print(error)
"""


def test_without_ffmpeg_an_m4a_file_says_what_is_missing(tmp_path):
    if shutil.which("ffmpeg") is None:
        skip_unless_required("ffmpeg not installed (make system-deps installs it)")
    sf.write(tmp_path / "original.wav", music(2.0), 44100)
    encode(tmp_path / "original.wav", tmp_path / "clip.m4a")
    (tmp_path / "bin").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "bin")}  # no ffmpeg on PATH
    result = subprocess.run(
        [sys.executable, "-c", MISSING_FFMPEG, str(tmp_path / "clip.m4a")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert "no ffmpeg to try" in result.stdout and "apt-get install ffmpeg" in result.stdout
