"""One tabular row per track, summarised from its log-mel HDF5: the data the Evidently reports read.

The HDF5 files (``results/features/{genre}/{track}.h5``, see docs/CONTRACTS.md) hold only the
log-mel spectrogram in absolute dB (``power_to_db(ref=1.0)``), cut into fixed-length segments.
Every summary feature is therefore computed from the mel spectrum, with the segments joined back
into one time axis:

* ``band{i}_mean/std``: mean and std over time of ``n_bands`` groups of adjacent mel bands (dB);
* ``mfcc{i}_mean/std``: ``librosa.feature.mfcc(S=logmel_db)``;
* ``centroid_hz``/``rolloff_hz`` (mean/std): spectral centroid and 85 % roll-off of the mel power,
  weighted by the mel band centre frequencies;
* ``flatness_mean`` (geometric/arithmetic mean of the mel power) and ``contrast_db_mean``
  (per-frame spread between the 90th and 10th percentile band, in dB);
* ``rms_mean/std`` (square root of the mean mel power per frame) and ``loudness_db_mean``;
* ``onset_strength_mean`` and ``tempo_bpm`` from ``librosa.onset.onset_strength(S=...)`` and
  ``librosa.feature.tempo`` with the file's ``sample_rate`` and ``hop_length``;
* ``duration_s`` (attribute of the HDF5 file).

Zero-crossing rate is not computed: it needs the waveform, the HDF5 does not hold it, and reading
the audio (attribute ``source_path``) would make the table depend on files the rule does not
declare as inputs, and that may be absent (other machine, audio moved or never pulled).

Identification columns (``track_id genre track split source_md5``, optionally ``prediction``) are
not features; :func:`feature_columns` lists the numeric summary columns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from genre_classification import fileio
from genre_classification.features.features import read_features
from genre_classification.features.packs import accepted_files
from genre_classification.training.dataset import read_split, track_id

log = logging.getLogger(__name__)

ID_COLUMNS = ("track_id", "genre", "track", "split", "source_md5")
PREDICTION_COLUMN = "prediction"
ROLLOFF_PERCENT = 0.85


def _band_edges(n_mels: int, n_bands: int) -> np.ndarray:
    n_bands = max(1, min(n_bands, n_mels))
    return np.linspace(0, n_mels, n_bands + 1).round().astype(int)


def summarise_logmel(
    logmel: np.ndarray,
    sample_rate: int,
    hop_length: int,
    n_bands: int = 8,
    n_mfcc: int = 13,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> dict[str, float]:
    """Summary features of one track's log-mel (dB), shape ``(n_segments, n_mels, frames)``."""
    import librosa

    logmel = np.asarray(logmel, dtype=np.float64)
    if logmel.ndim == 2:
        logmel = logmel[np.newaxis]
    n_segments, n_mels, frames = logmel.shape
    if n_segments * frames == 0:
        raise ValueError(f"empty log-mel array of shape {logmel.shape}")
    # segments are consecutive, non-overlapping windows: join them back into one time axis
    s_db = logmel.transpose(1, 0, 2).reshape(n_mels, n_segments * frames)
    power = librosa.db_to_power(s_db)
    freqs = librosa.mel_frequencies(
        n_mels=n_mels, fmin=fmin, fmax=fmax if fmax else sample_rate / 2.0
    )
    row: dict[str, float] = {}

    edges = _band_edges(n_mels, n_bands)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        band = s_db[lo:hi].mean(axis=0)
        row[f"band{i:02d}_mean"] = band.mean()
        row[f"band{i:02d}_std"] = band.std()

    mfcc = librosa.feature.mfcc(S=s_db, n_mfcc=n_mfcc)
    for i in range(mfcc.shape[0]):
        row[f"mfcc{i:02d}_mean"] = mfcc[i].mean()
        row[f"mfcc{i:02d}_std"] = mfcc[i].std()

    total = power.sum(axis=0)
    safe_total = np.maximum(total, 1e-20)
    centroid = (freqs[:, None] * power).sum(axis=0) / safe_total
    cumulative = np.cumsum(power, axis=0)
    rolloff_index = np.argmax(cumulative >= ROLLOFF_PERCENT * cumulative[-1], axis=0)
    rolloff = freqs[rolloff_index]
    row["centroid_hz_mean"] = centroid.mean()
    row["centroid_hz_std"] = centroid.std()
    row["rolloff_hz_mean"] = rolloff.mean()
    row["rolloff_hz_std"] = rolloff.std()

    floor = 1e-20
    geometric = np.exp(np.log(power + floor).mean(axis=0))
    row["flatness_mean"] = (geometric / (power.mean(axis=0) + floor)).mean()
    high, low = np.percentile(s_db, [90, 10], axis=0)
    row["contrast_db_mean"] = (high - low).mean()

    rms = np.sqrt(power.mean(axis=0))
    row["rms_mean"] = rms.mean()
    row["rms_std"] = rms.std()
    row["loudness_db_mean"] = (10.0 * np.log10(np.maximum(power.mean(axis=0), 1e-10))).mean()

    onset = librosa.onset.onset_strength(S=s_db, sr=sample_rate, hop_length=hop_length)
    row["onset_strength_mean"] = onset.mean()
    row["tempo_bpm"] = _tempo(onset, sample_rate, hop_length)
    return {key: float(value) for key, value in row.items()}


def _tempo(onset: np.ndarray, sample_rate: int, hop_length: int, frame_hop: int = 32) -> float:
    """``librosa.feature.tempo`` on a time-subsampled tempogram.

    librosa's tempogram autocorrelates a Hann-windowed 8 s window of the onset envelope at every
    frame; the tempo estimate averages it over time. Taking every ``frame_hop``-th window gives the
    same average (windows overlap by >90 %) at a fraction of the cost
    (~30 ms -> ~3 ms per 30 s clip).
    """
    import librosa

    # librosa.feature.tempo's default ac_size: 8 s of onset frames
    win_length = int(librosa.time_to_frames(8.0, sr=sample_rate, hop_length=hop_length))
    padded = np.pad(onset, win_length // 2, mode="linear_ramp", end_values=0)
    frames = librosa.util.frame(padded, frame_length=win_length, hop_length=frame_hop, axis=-1)
    frames = frames * librosa.filters.get_window("hann", win_length, fftbins=True)[:, np.newaxis]
    tempogram = librosa.autocorrelate(frames, max_size=win_length, axis=0)
    tempogram = librosa.util.normalize(tempogram, norm=np.inf, axis=0, threshold=1e-10)
    tempo = librosa.feature.tempo(
        tg=tempogram, sr=sample_rate, hop_length=hop_length, aggregate=np.mean
    )
    return float(np.atleast_1d(tempo)[0])


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def summarise_file(path: str | Path, n_bands: int = 8, n_mfcc: int = 13) -> dict:
    """Summary features plus ``genre``/``source_md5``/``duration_s`` of one contract HDF5 file."""
    logmel, attrs = read_features(path)
    row = summarise_logmel(
        logmel,
        sample_rate=int(attrs["sample_rate"]),
        hop_length=int(attrs["hop_length"]),
        n_bands=n_bands,
        n_mfcc=n_mfcc,
        fmin=float(attrs.get("fmin", 0.0)),
        fmax=float(attrs["fmax"]) if "fmax" in attrs else None,
    )
    row["duration_s"] = float(attrs["duration_s"])
    row["source_md5"] = _text(attrs.get("source_md5", ""))
    row["label"] = _text(attrs.get("label", ""))
    return row


def build_track_table(
    tracks: Iterable[dict],
    n_bands: int = 8,
    n_mfcc: int = 13,
    predictions: str | Path | None = None,
) -> pd.DataFrame:
    """One row per track from rows with ``genre track split features`` (the split.tsv columns).

    ``features`` is the HDF5 path. With ``predictions`` (a predictions.csv of the evaluation
    stage) the predicted genre is added as ``prediction`` and only predicted tracks are kept.
    Rows are sorted by ``track_id``, so the table does not depend on the input order.
    """
    rows = []
    for track in tracks:
        summary = summarise_file(track["features"], n_bands=n_bands, n_mfcc=n_mfcc)
        label = summary.pop("label")
        genre = track.get("genre") or label
        rows.append(
            {
                "track_id": track_id(genre, str(track["track"])),
                "genre": genre,
                "track": str(track["track"]),
                "split": track.get("split", ""),
                **summary,
            }
        )
    if not rows:
        raise ValueError("no tracks to summarise")
    table = pd.DataFrame(rows)
    first = list(ID_COLUMNS)
    table = table[first + [c for c in table.columns if c not in first]]
    table = table.sort_values("track_id", kind="stable").reset_index(drop=True)
    if predictions is not None:
        table = attach_predictions(table, predictions)
    return table


def read_predictions(path: str | Path) -> pd.DataFrame:
    """predictions.csv (``track true predicted prob_<genre>...``) indexed by ``track_id``."""
    predictions = pd.read_csv(path, dtype={"track": str, "true": str, "predicted": str})
    missing = {"track", "predicted"} - set(predictions.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (see docs/CONTRACTS.md)")
    return predictions.rename(columns={"track": "track_id"})


def attach_predictions(table: pd.DataFrame, predictions: str | Path) -> pd.DataFrame:
    """Rows of ``table`` with a prediction, plus ``prediction`` and ``prob_<genre>`` columns."""
    preds = read_predictions(predictions)
    keep = ["track_id", "predicted"] + [c for c in preds.columns if c.startswith("prob_")]
    merged = table.merge(preds[keep], on="track_id", how="inner", validate="one_to_one")
    unknown = sorted(set(preds["track_id"]) - set(table["track_id"]))
    if unknown:
        raise ValueError(
            f"{predictions}: {len(unknown)} predicted tracks are not in the track table, "
            f"e.g. {unknown[:3]}"
        )
    return merged.rename(columns={"predicted": PREDICTION_COLUMN})


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The numeric summary-feature columns (not ids, labels, predictions or probabilities)."""
    skip = set(ID_COLUMNS) | {PREDICTION_COLUMN}
    return [
        column
        for column in table.columns
        if column not in skip
        and not column.startswith("prob_")
        and pd.api.types.is_numeric_dtype(table[column])
    ]


def tracks_in_dir(features_dir: str | Path, split: str = "") -> list[dict]:
    """Rows for every ``<features_dir>/<genre>/<track>.h5`` (a reference data version)."""
    root = Path(features_dir)
    return [
        {"genre": path.parent.name, "track": path.stem, "split": split, "features": str(path)}
        for path in sorted(root.glob("*/*.h5"))
    ]


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    fileio.write_frame(path, table, sep="\t", index=False, float_format="%.8g")


def read_table(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={c: str for c in (*ID_COLUMNS, PREDICTION_COLUMN)})


def _summarise_chunk(tracks: list[dict], n_bands: int, n_mfcc: int) -> pd.DataFrame:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one process per core
        return build_track_table(tracks, n_bands=n_bands, n_mfcc=n_mfcc)


def write_shard_table(
    record_path: str | Path,
    table_path: str | Path,
    n_bands: int = 8,
    n_mfcc: int = 13,
    threads: int = 1,
    chunk: int = 64,
) -> pd.DataFrame:
    """The track table of the accepted files of one extraction shard (rule
    ``track_table_shard``), summarised by ``threads`` worker processes, without ``split``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    tracks = accepted_files(record_path)[["genre", "track", "features"]].to_dict("records")
    chunks = [tracks[i : i + chunk] for i in range(0, len(tracks), chunk)]
    if threads <= 1 or len(chunks) <= 1:
        parts = [_summarise_chunk(c, n_bands, n_mfcc) for c in chunks]
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(threads, mp_context=context) as pool:
            futures = [pool.submit(_summarise_chunk, c, n_bands, n_mfcc) for c in chunks]
            parts = []
            for i, future in enumerate(futures, 1):
                parts.append(future.result())
                log.info("%d of %d tracks summarised", min(i * chunk, len(tracks)), len(tracks))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ID_COLUMNS)
    write_table(table, table_path)
    log.info(
        "%d tracks -> %s in %.1f s (%d processes)",
        len(table), table_path, time.perf_counter() - start, threads,
    )  # fmt: skip
    return table


def write_track_table(
    split_path: str | Path, shard_tables: Iterable[str | Path], table_path: str | Path
) -> pd.DataFrame:
    """The track table of every track of the split table, joined from the shard tables
    (``write_shard_table``) with each track's split; sorted by ``track_id``."""
    start = time.perf_counter()
    split = read_split(split_path)
    splits = dict(zip(map(track_id, split["genre"], split["track"]), split["split"], strict=True))
    parts = [read_table(path) for path in shard_tables]
    table = pd.concat([p for p in parts if len(p)], ignore_index=True)
    missing = sorted(set(splits) - set(table["track_id"]))
    if missing:
        raise ValueError(
            f"{len(missing)} tracks of {split_path} are in no shard table, e.g. {missing[:3]}: "
            "rerun snakemake (their shard tables are older than the split)"
        )
    table = table[table["track_id"].isin(splits)].copy()
    table["split"] = table["track_id"].map(splits)
    table = table.sort_values("track_id", kind="stable").reset_index(drop=True)
    write_table(table, table_path)
    log.info(
        "%d tracks x %d columns -> %s in %.2f s",
        len(table),
        table.shape[1],
        table_path,
        time.perf_counter() - start,
    )
    return table
