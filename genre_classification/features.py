"""Log-mel spectrogram extraction: one audio file in, one HDF5 file of fixed-length segments out."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from genre_classification.fileio import atomic_path

DATASET = "logmel"
# Fixed reference and floor instead of ref=np.max: silence stays finite (-100 dB, no -inf/NaN)
# and the same sound has the same dB values in every file.
AMIN = 1e-10


@dataclass(frozen=True)
class FeatureParams:
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    segment_seconds: float = 3.0

    @classmethod
    def from_config(cls, features: dict) -> FeatureParams:
        return cls(**{key: features[key] for key in cls.__dataclass_fields__})

    @property
    def frames_per_segment(self) -> int:
        return int(self.segment_seconds * self.sample_rate) // self.hop_length


class AudioError(ValueError):
    """An audio file that cannot be used (undecodable, empty or too short)."""


def duration_problem(n_samples: int, sample_rate: int, segment_seconds: float) -> str | None:
    """Why a decoded clip of ``n_samples`` cannot give one segment, or None if it can."""
    if n_samples == 0:
        return "empty: no audio samples"
    duration = n_samples / sample_rate
    if duration < segment_seconds:
        return f"too short: {duration:.2f} s < one segment of {segment_seconds} s"
    return None


def load_audio(path: str | Path, params: FeatureParams) -> np.ndarray:
    """Decode ``path`` to mono float32 at the target sample rate; raise AudioError if unusable."""
    import librosa

    try:
        audio, _ = librosa.load(path, sr=params.sample_rate, mono=True)
    except Exception as error:  # librosa raises many types for undecodable files
        raise AudioError(f"cannot decode: {type(error).__name__}: {error}") from error
    problem = duration_problem(audio.size, params.sample_rate, params.segment_seconds)
    if problem:
        raise AudioError(problem)
    return np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)


def log_mel_segments(audio: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-mel (dB) of the whole clip cut into ``(n_segments, n_mels, frames)`` float32."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=audio,
        sr=params.sample_rate,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
    )
    logmel = librosa.power_to_db(mel, ref=1.0, amin=AMIN, top_db=None).astype(np.float32)
    frames = params.frames_per_segment
    n_segments = logmel.shape[1] // frames
    segments = logmel[:, : n_segments * frames].reshape(params.n_mels, n_segments, frames)
    return np.ascontiguousarray(segments.transpose(1, 0, 2))


def write_features(
    out_path: str | Path,
    segments: np.ndarray,
    params: FeatureParams,
    label: str,
    source_path: str,
    source_md5: str,
    duration_s: float,
) -> None:
    """Write atomically (temp file + rename) so an interrupted job leaves no half-written HDF5."""
    import librosa

    with atomic_path(out_path) as tmp_path, h5py.File(tmp_path, "w") as h5:
        h5.create_dataset(DATASET, data=segments)
        h5.attrs.update(asdict(params))
        h5.attrs.update(
            label=label,
            source_path=str(source_path),
            source_md5=source_md5,
            duration_s=float(duration_s),
            librosa_version=librosa.__version__,
        )


def extract_file(
    audio_path: str | Path,
    out_path: str | Path,
    params: FeatureParams,
    label: str,
    source_md5: str,
) -> tuple[int, ...]:
    """Extract one audio file into one HDF5 file; returns the shape of the segment array."""
    audio = load_audio(audio_path, params)
    segments = log_mel_segments(audio, params)
    write_features(
        out_path,
        segments,
        params,
        label,
        str(audio_path),
        source_md5,
        audio.size / params.sample_rate,
    )
    return segments.shape


def read_features(path: str | Path) -> tuple[np.ndarray, dict]:
    with h5py.File(path, "r") as h5:
        return h5[DATASET][()], dict(h5.attrs)


def extract_logged(
    audio_path: str,
    out_path: str,
    features: dict,
    label: str,
    source_md5: str,
    log_path: str,
) -> None:
    """``extract_file`` for one Snakemake job (``features``: the config section), logging to
    its own log file.

    Jobs run as threads of one process (see workflow/profiles/default), so this writes the job's log
    directly instead of reconfiguring the process-wide logging.
    """
    import time

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            params = FeatureParams.from_config(features)
            shape = extract_file(audio_path, out_path, params, label, source_md5)
        except AudioError as error:
            log.write(f"{audio_path}: {error}\n")
            raise AudioError(
                f"{audio_path}: {error}. It passed the screening of the fetch_audio step, so the "
                "file changed since; rerun the workflow to screen it again, or remove the file."
            ) from error
        log.write(
            f"{audio_path} -> {out_path}: logmel {shape} in {time.perf_counter() - start:.3f} s\n"
        )
