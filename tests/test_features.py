"""Log-mel extraction: shapes, values, attributes, silence, resampling, bad audio."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf

from conftest import SMALL_FEATURES
from genre_classification.features.features import (
    AudioError,
    FeatureParams,
    extract_audio,
    load_audio,
    log_mel_segments,
    read_features,
)

PARAMS = SMALL_FEATURES


def tone(seconds: float, freq: float = 440.0, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_segments_shape_and_energy_at_the_tone(tmp_path):
    segments = log_mel_segments(tone(3.4), PARAMS)
    assert segments.shape == (3, 64, PARAMS.frames_per_segment) == (3, 64, 43)
    assert segments.dtype == np.float32
    mel_freqs = librosa.mel_frequencies(n_mels=64, fmax=11025)
    loudest_band = segments.mean(axis=(0, 2)).argmax()
    assert abs(mel_freqs[loudest_band] - 440) < 60


def test_silence_is_finite():
    segments = log_mel_segments(np.zeros(22050 * 2, dtype=np.float32), PARAMS)
    assert np.isfinite(segments).all()
    assert segments.min() == pytest.approx(-100.0)


def test_extract_writes_attributes(tmp_path):
    audio = tmp_path / "a.wav"
    sf.write(audio, tone(2.5), 22050)
    out = tmp_path / "out" / "a.h5"
    shape, _ = extract_audio(audio, out, PARAMS, label="jazz", source_md5="0" * 32)
    logmel, attrs = read_features(out)
    assert logmel.shape == shape == (2, 64, 43)
    assert attrs["label"] == "jazz" and attrs["source_md5"] == "0" * 32
    assert attrs["sample_rate"] == 22050 and attrs["n_fft"] == 1024
    assert attrs["hop_length"] == 512 and attrs["segment_seconds"] == 1.0
    assert attrs["librosa_version"] == librosa.__version__
    assert attrs["duration_s"] == pytest.approx(2.5, abs=1e-3)
    assert not list(out.parent.glob(".tmp-*"))  # written atomically


def test_stereo_44k_is_mono_and_resampled(tmp_path):
    audio = tmp_path / "stereo.flac"
    left = tone(2.0, rate=44100)
    sf.write(audio, np.stack([left, -left * 0.5], axis=1), 44100)
    decoded = load_audio(audio, PARAMS)
    assert decoded.ndim == 1
    assert decoded.size == pytest.approx(2.0 * 22050, abs=2)


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"not audio at all" * 100), "cannot decode"),
        (lambda p: sf.write(p, tone(0.5), 22050), "too short"),
    ],
)
def test_bad_audio_raises_with_reason(tmp_path, write, reason):
    path = tmp_path / "bad.wav"
    write(path)
    with pytest.raises(AudioError, match=reason):
        load_audio(path, PARAMS)
    assert not (tmp_path / "bad.h5").exists()


def test_from_config_ignores_nothing_it_needs():
    params = FeatureParams.from_config(
        {"sample_rate": 16000, "n_fft": 512, "hop_length": 160, "n_mels": 40, "segment_seconds": 2}
    )
    assert params.frames_per_segment == 200


@pytest.mark.parametrize(
    "params",
    [
        FeatureParams(),
        FeatureParams(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, scale="log1p"),
        FeatureParams(sample_rate=8000, n_fft=1024, hop_length=300, n_mels=40),
    ],
)
def test_numpy_spectrogram_equals_librosa(params):
    """The extraction's numpy STFT, filter bank and dB/log1p are librosa's math (it avoids
    importing librosa.core in every extraction job)."""
    import librosa

    from genre_classification.features.features import mel_filter_bank, mel_power

    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(int(params.sample_rate * 7.3))).astype(np.float32)
    bank = librosa.filters.mel(sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels)
    np.testing.assert_allclose(
        mel_filter_bank(params.sample_rate, params.n_fft, params.n_mels), bank, atol=1e-7
    )
    reference = librosa.feature.melspectrogram(
        y=audio, sr=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
        n_mels=params.n_mels,
    )  # fmt: skip
    ours = mel_power(audio, params, block_frames=50)  # several blocks
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6 * reference.max())
    if params.scale == "db":
        reference_log = librosa.power_to_db(reference, ref=1.0, amin=1e-10, top_db=None)
    else:
        reference_log = np.log10(1 + 10000 * reference)
    frames = params.frames_per_segment
    n = reference_log.shape[1] // frames
    expected = reference_log[:, : n * frames].reshape(params.n_mels, n, frames).transpose(1, 0, 2)
    np.testing.assert_allclose(log_mel_segments(audio, params), expected, atol=1e-3)


def test_resample_equals_librosa():
    import librosa

    from genre_classification.features.features import resample

    audio = np.random.default_rng(1).standard_normal(44100 * 2 + 17).astype(np.float32)
    expected = librosa.resample(audio, orig_sr=44100, target_sr=22050)
    ours = resample(audio, 44100, 22050)
    assert ours.shape == expected.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-6)
