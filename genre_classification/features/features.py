"""Log-mel spectrogram extraction: one audio file in, one HDF5 file of fixed-length segments out."""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shutil
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import h5py
import numpy as np

from genre_classification.code_version import definitions_fingerprint
from genre_classification.fileio import atomic_path, read_tsv, write_text_if_changed

log = logging.getLogger(__name__)

DATASET = "logmel"
SHARD_RECORDS = ".shards"
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
    # Longest part of a track that is used, from its middle; 0: the whole track.
    excerpt_seconds: float = 120.0
    # db: 10·log10(mel) (power_to_db, floor AMIN); log1p: log10(1 + 10000·mel), musicnn's input.
    scale: str = "db"

    @classmethod
    def from_config(cls, features: dict) -> FeatureParams:
        return cls(**{key: features[key] for key in cls.__dataclass_fields__ if key in features})

    @property
    def frames_per_segment(self) -> int:
        return int(self.segment_seconds * self.sample_rate) // self.hop_length


class AudioError(ValueError):
    """An audio file that cannot be used (undecodable, empty or too short)."""


# Errors that are about where the features go, never about the audio file being read: a full
# disk, a quota, a read-only file system. Met while reading, they still fail the job.
NOT_ABOUT_THE_FILE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class FeatureWriteError(Exception):
    """An HDF5 that cannot be written (disk full, quota, read-only or unwritable directory, an
    I/O error of the output): not the audio's fault, so the file is not quarantined; the job
    fails instead. ``nbytes``: the size of the segments that were being written (0: unknown).
    Every argument is in ``args``, so the error pickles across the process pool."""

    def __init__(self, path: str, reason: str, error_number: int | None = None, nbytes: int = 0):
        super().__init__(str(path), reason, error_number, nbytes)
        self.path, self.reason, self.errno, self.nbytes = str(path), reason, error_number, nbytes

    def __str__(self) -> str:
        return f"cannot write feature file {self.path}: {self.reason}"


def error_number(error: BaseException) -> int | None:
    """The errno of ``error`` or of an error it wraps (h5py: ``OSError: [Errno 28] ...`` or
    ``... (file write failed: ..., errno = 28, error message = 'No space left on device' ...)``
    without ``errno`` set; a decoder's error wrapped in an AudioError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        number = getattr(error, "errno", None)
        if isinstance(number, int):
            return number
        found = re.search(r"errno = (\d+)|\[Errno (\d+)\]", str(error))
        if found:
            return int(found.group(1) or found.group(2))
        error = error.__cause__ or error.__context__
    return None


def write_error(path: str | Path, error: BaseException, nbytes: int = 0) -> FeatureWriteError:
    """``error`` met while writing the HDF5 ``path`` as a FeatureWriteError."""
    reason = f"{type(error).__name__}: {error}".replace("\n", " ").replace("\t", " ")
    return FeatureWriteError(str(path), reason, error_number(error), nbytes)


def duration_problem(n_samples: int, sample_rate: int, segment_seconds: float) -> str | None:
    """Why a decoded clip of ``n_samples`` cannot give one segment, or None if it can."""
    if n_samples == 0:
        return "empty: no audio samples"
    duration = n_samples / sample_rate
    if duration < segment_seconds:
        return f"too short: {duration:.2f} s < one segment of {segment_seconds} s"
    return None


def excerpt_window(n_frames: int, rate: int, excerpt_seconds: float) -> tuple[int, int]:
    """(start, length) in frames of the middle ``excerpt_seconds`` of ``n_frames`` (all if 0 or
    the track is shorter)."""
    length = n_frames if excerpt_seconds <= 0 else min(n_frames, int(excerpt_seconds * rate))
    return (n_frames - length) // 2, length


def _decode_mono(
    path: str | Path, excerpt_seconds: float, block_frames: int = 1 << 18
) -> tuple[np.ndarray, int]:
    """Decode the excerpt to mono float32 at the file's own rate, block by block: the peak is the
    mono excerpt, not all channels of the file (10 min at 96 kHz, 8 channels: 1.8 GB)."""
    import soundfile as sf

    try:
        audio_file = sf.SoundFile(path)
    except sf.LibsndfileError as sndfile_error:
        return _decode_with_ffmpeg(path, excerpt_seconds, sndfile_error)
    with audio_file:
        start, length = excerpt_window(audio_file.frames, audio_file.samplerate, excerpt_seconds)
        if start:
            audio_file.seek(start)
        mono = np.empty(length, dtype=np.float32)
        filled = 0
        while filled < length:
            block = audio_file.read(
                min(block_frames, length - filled), dtype="float32", always_2d=True
            )
            if not len(block):
                break
            mono[filled : filled + len(block)] = block.mean(axis=1)
            filled += len(block)
        return mono[:filled], audio_file.samplerate


def _decode_with_ffmpeg(path, excerpt_seconds: float, sndfile_error) -> tuple[np.ndarray, int]:
    import audioread
    import librosa

    try:
        duration = librosa.get_duration(path=path)
        start, length = excerpt_window(int(duration * 1000), 1000, excerpt_seconds)
        return librosa.load(
            path, sr=None, mono=True, offset=start / 1000, duration=length / 1000 or None
        )
    except audioread.NoBackendError as error:
        raise AudioError(
            f"cannot decode: libsndfile: {sndfile_error}; and no ffmpeg to try (formats such as "
            "m4a/aac need it: apt-get install ffmpeg; the container image has it)"
            if shutil.which("ffmpeg") is None
            else f"cannot decode: libsndfile: {sndfile_error}; ffmpeg cannot read it either"
        ) from error


def load_audio(path: str | Path, params: FeatureParams) -> np.ndarray:
    """Decode ``path`` to mono float32 at the target sample rate; raise AudioError if unusable."""
    if Path(path).stat().st_size == 0:
        raise AudioError("empty: file has 0 bytes")
    try:
        audio, rate = _decode_mono(path, params.excerpt_seconds)
        if rate != params.sample_rate and audio.size:
            audio = resample(audio, rate, params.sample_rate)
    except AudioError:
        raise
    except Exception as error:  # decoders raise many types for undecodable files
        reason = f"cannot decode: {type(error).__name__}: {error}".replace("\n", " ")
        raise AudioError(reason) from error
    problem = duration_problem(audio.size, params.sample_rate, params.segment_seconds)
    if problem:
        raise AudioError(problem)
    if np.isfinite(audio).all():
        return audio
    return np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)


# The spectrogram math of librosa (0.11: stft with a periodic Hann window, centred frames and
# zero padding; Slaney mel filter bank; power_to_db with ref 1.0), written with numpy: importing
# librosa.core pulls in scipy.signal and numba, about 1.5 s per extraction job.
# tests/test_features.py compares every function here with librosa's.


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """``librosa.resample``'s default (soxr, high quality), length ceil(n * target / rate)."""
    import soxr

    resampled = soxr.resample(audio, rate, target_rate, quality="HQ")
    length = int(np.ceil(audio.size * target_rate / rate))
    if resampled.size < length:
        resampled = np.pad(resampled, (0, length - resampled.size))
    return np.asarray(resampled[:length], dtype=audio.dtype)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mels = hz * 3.0 / 200.0
    above = hz >= 1000.0
    mels[above] = 15.0 + np.log(hz[above] / 1000.0) / (np.log(6.4) / 27.0)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    hz = mels * 200.0 / 3.0
    above = mels >= 15.0
    hz[above] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels[above] - 15.0))
    return hz


@functools.lru_cache(maxsize=8)
def mel_filter_bank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)``: triangles on the
    Slaney mel scale from 0 Hz to Nyquist, area-normalised; ``(n_mels, 1 + n_fft // 2)``."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array([sample_rate / 2.0]))[0], n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _sparse_mel_filter_bank(sample_rate: int, n_fft: int, n_mels: int):
    """``mel_filter_bank`` as a CSR matrix: each band covers a few bins, so the product with a
    power spectrum takes ~2,000 multiplications per frame instead of ~130,000."""
    import scipy.sparse

    return scipy.sparse.csr_array(mel_filter_bank(sample_rate, n_fft, n_mels))


def mel_power(audio: np.ndarray, params: FeatureParams, block_frames: int = 2048) -> np.ndarray:
    """Mel power spectrogram ``(n_mels, frames)`` of ``audio``, frames of the centred STFT; the
    STFT is taken block by block, so memory stays a few block sizes plus the mel output."""
    import scipy.fft  # here, not at the top: 0.2 s that every Snakemake start would pay

    n_fft, hop = params.n_fft, params.hop_length
    padded = np.pad(audio.astype(np.float32, copy=False), n_fft // 2)
    n_frames = 1 + (padded.size - n_fft) // hop
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    bank = _sparse_mel_filter_bank(params.sample_rate, n_fft, params.n_mels)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    mel = np.empty((params.n_mels, n_frames), dtype=np.float32)
    for start in range(0, n_frames, block_frames):
        # scipy.fft: ~6x faster than numpy.fft on float32 frames (measured: 0.6 against 3.4 ms)
        spectrum = scipy.fft.rfft(frames[start : start + block_frames] * window, axis=1)
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        mel[:, start : start + block_frames] = bank @ power.T.astype(np.float32, copy=False)
    return mel


def log_mel_segments(audio: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-mel of the whole clip cut into ``(n_segments, n_mels, frames)`` float32."""
    mel = mel_power(audio, params)
    if params.scale == "log1p":
        logmel = np.log10(1 + 10000 * mel).astype(np.float32)
    else:  # librosa.power_to_db(mel, ref=1.0, amin=AMIN, top_db=None)
        logmel = (10.0 * np.log10(np.maximum(AMIN, mel))).astype(np.float32)
    frames = params.frames_per_segment
    n_segments = logmel.shape[1] // frames
    segments = logmel[:, : n_segments * frames].reshape(params.n_mels, n_segments, frames)
    return np.ascontiguousarray(segments.transpose(1, 0, 2))


# What computes a file's features: these functions and what they use in this module (FeatureParams,
# the decoders, the mel filter bank, AMIN...). Their fingerprint (``feature_code``) is recorded in
# every HDF5; a file whose recorded feature code differs is re-extracted when its shard runs.
FEATURE_CODE_ROOTS = ("load_audio", "log_mel_segments")


@functools.cache
def feature_code() -> str:
    """The fingerprint of the code that computes features (``FEATURE_CODE_ROOTS``): compared as
    syntax trees, so comments, formatting, docstrings and the rest of the module (logging,
    shard records, repairs) do not count; a change in what they compute does."""
    return definitions_fingerprint(Path(__file__), FEATURE_CODE_ROOTS)


def write_features(
    out_path: str | Path,
    segments: np.ndarray,
    params: FeatureParams,
    label: str,
    source_path: str,
    source_md5: str,
    duration_s: float,
    source_stat: str = "",
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
            # "<size>:<mtime_ns>" of the source when written: lets a rerun trust source_md5
            # without reading the audio again while the file is unchanged.
            source_stat=source_stat,
            librosa_version=librosa.__version__,
            feature_code=feature_code(),
        )


def extract_audio(
    audio_path: str | Path,
    out_path: str | Path,
    params: FeatureParams,
    label: str,
    source_md5: str,
    source_stat: str = "",
) -> tuple[tuple[int, ...], float]:
    """Extract one audio file into one HDF5 file; returns the shape of the segment array and the
    duration (s) of the decoded audio. AudioError: the file cannot be read or decoded (its
    fault); FeatureWriteError: the HDF5 cannot be written (not its fault)."""
    audio = load_audio(audio_path, params)  # AudioError: the file is bad
    segments = log_mel_segments(audio, params)
    duration_s = audio.size / params.sample_rate
    try:  # anything failing from here on is about the output, not the audio
        write_features(
            out_path, segments, params, label, str(audio_path), source_md5, duration_s, source_stat
        )
    except (OSError, RuntimeError) as error:  # h5py raises both for a failed write
        raise write_error(out_path, error, segments.nbytes) from error
    return segments.shape, duration_s


class FeatureFileError(OSError):
    """A feature file that cannot be read; the message names it and how it gets rebuilt."""


def read_features(path: str | Path) -> tuple[np.ndarray, dict]:
    try:
        with h5py.File(path, "r") as h5:
            return h5[DATASET][()], dict(h5.attrs)
    except (OSError, KeyError) as error:
        raise unreadable_features(path, error) from error


def shard_record_path(features_dir: str | Path, shard: str) -> Path:
    """The record of an extraction shard (its files and their state), kept beside the features
    so that a reader of a damaged HDF5 can find and invalidate it."""
    return Path(features_dir) / SHARD_RECORDS / f"{shard}.tsv"


def repair_requests(features_dir: str | Path, shard: str, persist: bool = True) -> str:
    """Damaged files of a shard: those reported by readers (see ``unreadable_features``) and
    those changed since the shard record was written (``changed_features``, added to the
    reports here); a rule param of the shard, so a new report or a changed file makes the next
    `snakemake` rerun the shard, which re-extracts what does not open. The reports stay in the
    ``.repairs`` file: the param keeps its text after the rerun (Snakemake evaluates it again
    when the job starts, after removing the record), and no second rerun follows.

    ``persist=False`` (a dry run, ``--summary``, ``--dag``: nothing runs) returns the same text
    but writes nothing: the new lines are only logged, so a later real run still finds them."""
    record = shard_record_path(features_dir, shard)
    path = record.with_suffix(".repairs")
    reports = path.read_text() if path.is_file() else ""
    new = [line for line in changed_features(record).splitlines() if line not in reports]
    if new and persist:
        with open(path, "a") as handle:
            handle.write("".join(f"{line}\n" for line in new))
        reports = path.read_text()
    elif new:
        for line in new:
            if (path, line) not in _LOGGED:
                _LOGGED.add((path, line))
                log.warning("shard %s will re-extract %s (not recorded: nothing runs)", shard, line)
        reports += "".join(f"{line}\n" for line in new)
    return reports


# (repairs file, line) already logged by repair_requests: Snakemake evaluates a param repeatedly.
_LOGGED: set[tuple[Path, str]] = set()


def changed_features(record_path: str | Path) -> str:
    """``<hdf5 path>\tchanged since the shard record (...)`` lines for each HDF5 of the record
    that is gone, or whose size differs from its ``features_size``, or whose mtime differs
    from its ``features_mtime_ns`` at whole-second resolution and that fails a content check
    (it opens, and its ``source_md5`` and number of segments are the record's): a truncated or
    overwritten file. A copied results tree (``tar``: whole-second mtimes; ``cp -r``,
    ``rsync -r``: new mtimes) names nothing. One ``stat`` per file; a file is opened only when
    its mtime moved, once: its new stat is kept in ``<shard>.verified`` beside the record (a
    cache, not a param). Rows without these columns (records written before them, rejected
    files) are not checked."""
    record_path = Path(record_path)
    verified_path = record_path.with_suffix(".verified")
    verified = {}
    if verified_path.is_file():
        verified = {
            fields[0]: tuple(fields[1:])
            for fields in (line.split("\t") for line in verified_path.read_text().splitlines())
            if len(fields) == 3
        }
    lines, newly = [], {}
    for row in read_tsv(record_path):
        size, mtime = row.get("features_size"), row.get("features_mtime_ns")
        if not size or not mtime:
            continue
        path, recorded = row["features"], f"{size}:{mtime}"
        try:
            stat = os.stat(path)
            now = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stat, now = None, "missing"
        if now == recorded or verified.get(path) == (recorded, now):
            continue
        if stat is not None and str(stat.st_size) == size:
            if stat.st_mtime_ns // 10**9 == int(mtime) // 10**9:
                continue
            if _same_content(path, row):
                newly[path] = (recorded, now)
                continue
        lines.append(f"{path}\tchanged since the shard record ({recorded} -> {now})\n")
    if newly:
        verified.update(newly)
        write_text_if_changed(
            verified_path, "".join(f"{p}\t{r}\t{n}\n" for p, (r, n) in sorted(verified.items()))
        )
    return "".join(lines)


def _same_content(path: str, row: dict) -> bool:
    """A moved HDF5 still holds what the record says: it opens, its ``source_md5`` and its
    number of segments are the record row's (attributes and the dataset's shape: no data read)."""
    try:
        with h5py.File(path, "r") as h5:
            return (
                str(h5.attrs.get("source_md5", "")) == row["md5"]
                and str(h5[DATASET].shape[0]) == row["n_segments"]
            )
    except (OSError, KeyError):
        return False


def unreadable_features(path: str | Path, error: Exception) -> FeatureFileError:
    """The error for a damaged feature file (truncated, half-copied); the file is reported to its
    shard (``repair_requests``), whose next run rebuilds it (and only it)."""
    path = Path(path)
    records = path.parent.parent / SHARD_RECORDS
    shards = [r for r in records.glob("*.tsv") if f"\t{path}\t" in r.read_text()]
    for record in shards:
        with open(record.with_suffix(".repairs"), "a") as repairs:
            repairs.write(f"{path}\t{type(error).__name__}\n")
    rebuild = (
        f"its extraction shard ({', '.join(r.stem for r in shards)}) is marked for repair: run "
        "snakemake again and it re-extracts this file"
        if shards
        else "run `snakemake --forcerun extract_features` to check every feature file and "
        "re-extract the damaged ones"
    )
    return FeatureFileError(
        f"feature file {path} cannot be read ({type(error).__name__}: {error}); {rebuild}"
    )


def feature_path(features_dir: str | Path, genre: str, track: str) -> Path:
    """Where the HDF5 of a track lives under ``features_dir`` (``<genre>/<track>.h5``)."""
    return Path(features_dir) / genre / f"{track}.h5"


def existing_features(path: str | Path, params: FeatureParams) -> dict | None:
    """Attributes (plus ``n_segments``) of a readable HDF5 at ``path`` made with ``params`` and
    the current ``feature_code``; None when it is missing, unreadable (truncated, half-copied),
    made with other parameters or by other feature code. A file without ``feature_code``
    (written before 0.2.0) counts as made by the current code."""
    if not os.path.exists(path):
        return None
    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
            n_segments = h5[DATASET].shape[0]
        if params_from_attrs(attrs) != params:
            return None
        if attrs.get("feature_code", feature_code()) != feature_code():
            return None
    except (OSError, KeyError):
        return None
    return {**attrs, "n_segments": n_segments}


def params_from_attrs(attrs) -> FeatureParams:
    """The ``FeatureParams`` an HDF5 was written with; a parameter added since (``scale``) has
    its default in older files. KeyError if one without a default is missing."""
    values = {}
    for field in fields(FeatureParams):
        value = attrs[field.name] if field.name in attrs else field.default
        if value is MISSING:
            raise KeyError(field.name)
        values[field.name] = value.item() if hasattr(value, "item") else value
    return FeatureParams(**values)


# --- feature sets: named variants of `features` (config `feature_sets`), one directory each ---

DEFAULT_SET = "default"
# Sets that pretrained weights need, there without configuration (feature_sets may override).
BUILTIN_SETS = {
    # musicnn (MSD/MTT checkpoints): 16 kHz, 512-point FFT, hop 256, 96 bands, 187-frame patches
    "musicnn": {
        "sample_rate": 16000,
        "n_fft": 512,
        "hop_length": 256,
        "n_mels": 96,
        "segment_seconds": 3.0,
        "scale": "log1p",
    },
}


def feature_sets(config: dict) -> dict[str, dict]:
    """Every named set: the built-in ones and those of the config's ``feature_sets``."""
    return {**BUILTIN_SETS, **(config.get("feature_sets") or {})}


def feature_set_params(config: dict, name: str) -> dict:
    """The feature parameters of set ``name``: ``features`` with the set's keys on top."""
    if name == DEFAULT_SET:
        return dict(config["features"])
    sets = feature_sets(config)
    if name not in sets:
        raise ValueError(
            f"feature set {name!r} is not defined: add it under feature_sets in the config "
            f"(defined: {sorted([DEFAULT_SET, *sets])})"
        )
    return {**config["features"], **sets[name]}


def feature_set_dir(features_dir: str | Path, name: str) -> Path:
    """``results/features`` for the default set, ``results/features-<name>`` for the others."""
    features_dir = Path(features_dir)
    if name == DEFAULT_SET:
        return features_dir
    return features_dir.with_name(f"{features_dir.name}-{name}")


def feature_set_of_dir(features_dir: str | Path) -> str:
    """The inverse of ``feature_set_dir``."""
    base, _, name = Path(features_dir).name.partition("-")
    return name or DEFAULT_SET
