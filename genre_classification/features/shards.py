"""Sharded feature extraction: one job per shard of files (``genre_classification.data.shards``
assigns them), one HDF5 per audio file.

* A shard job checks each member's HDF5: one that opens, was made with the same feature
  parameters and from the same content md5 is kept; only the others are extracted, in a process
  pool of the job's threads. Each HDF5 is written atomically, so a job killed midway keeps what
  it finished. A file that cannot be read or decoded is quarantined with its reason: it never
  fails the shard. An HDF5 that cannot be written (full disk, quota, read-only or unwritable
  features directory) is not the file's fault: the job fails naming the directory and the space
  it needs, writes no record (so Snakemake reruns it), and keeps every finished HDF5.
* The job writes a shard record (TSV, one row per member: accepted with the feature file and
  segment count, or rejected with the reason): the Snakemake output of the job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from threadpoolctl import threadpool_limits

from genre_classification.columns import (
    MANIFEST_COLUMNS,
    RECORD_COLUMNS,
    RECORD_STATUSES,
    REJECTED_COLUMNS,
)
from genre_classification.data.audio_source import AudioFile, file_md5
from genre_classification.features.features import (
    NOT_ABOUT_THE_FILE,
    AudioError,
    FeatureParams,
    FeatureWriteError,
    error_number,
    existing_features,
    extract_audio,
    feature_path,
    log_mel_segments,
    write_error,
)
from genre_classification.fileio import read_tsv, write_json, write_tsv

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 10.0
CHUNK_FILES = 8


@dataclass(frozen=True)
class ShardTask:
    """What one worker needs for one member file (picklable)."""

    audio: AudioFile
    root: str
    features_dir: str
    params: FeatureParams


def _content_md5(path: Path, stat: str, audio: AudioFile, existing: dict | None) -> str:
    """DVC's md5 where the listing has it; else the HDF5's md5 if the file is unchanged since
    (same size and mtime); else read the file."""
    if audio.content_md5:
        return audio.content_md5
    if existing and existing.get("source_stat") == stat:
        return str(existing["source_md5"])
    return file_md5(path)


def _record_row(task: ShardTask, **values) -> dict:
    """A shard record row of ``task``'s file, empty but for ``values``."""
    audio = task.audio
    row = dict.fromkeys(RECORD_COLUMNS, "")
    row.update(genre=audio.genre, track=audio.track, path=str(Path(task.root) / audio.relpath))
    return {**row, **values}


class ShardWriteError(RuntimeError):
    """A shard job that cannot write its features: the message names the features directory,
    the space it needs and what to do."""


def process_member(task: ShardTask) -> dict:
    """Keep, extract or reject one file; returns its record row (never raises for bad audio).
    Raises FeatureWriteError when its HDF5 cannot be written (``extract_audio``) or a read
    fails for a reason that is not about the file (``NOT_ABOUT_THE_FILE``: a full disk)."""
    audio, params = task.audio, task.params
    out = feature_path(task.features_dir, audio.genre, audio.track)
    row = _record_row(task, features=str(out))
    path = Path(row["path"])
    try:
        stat = path.stat()
        source_stat = f"{stat.st_size}:{stat.st_mtime_ns}"
        existing = existing_features(out, params)
        md5 = _content_md5(path, source_stat, audio, existing)
        row.update(md5=md5, size_bytes=stat.st_size)
        if existing and existing.get("source_md5") == md5:
            # Same content (perhaps a new mtime after a `dvc pull`): the HDF5 stays untouched.
            row.update(status="kept", n_segments=existing["n_segments"])
            row["duration_s"] = f"{float(existing['duration_s']):.3f}"
            return {**row, **features_stat(out)}
        start = time.perf_counter()
        shape, duration_s = extract_audio(path, out, params, audio.genre, md5, source_stat)
        row.update(status="extracted", n_segments=shape[0], duration_s=f"{duration_s:.3f}")
        log.debug("%s -> %s %s in %.3f s", path, out, shape, time.perf_counter() - start)
    except FeatureWriteError:
        raise
    except (AudioError, OSError) as error:
        if error_number(error) in NOT_ABOUT_THE_FILE:
            raise write_error(out, error) from error
        row.update(status="rejected", reason=str(error).replace("\n", " ").replace("\t", " "))
    except Exception as error:  # a decoder bug must not lose the shard's other files
        row.update(status="rejected", reason=f"{type(error).__name__}: {error}".replace("\n", " "))
    if row["status"] == "rejected":
        try:
            out.unlink(missing_ok=True)  # an HDF5 of an earlier, good version would be stale
        except OSError as error:
            raise write_error(out, error) from error
    else:
        row.update(features_stat(out))
    return row


def features_stat(path: str | Path) -> dict[str, int]:
    """The record's ``features_size`` and ``features_mtime_ns`` of an HDF5 (one ``stat``)."""
    stat = os.stat(path)
    return {"features_size": stat.st_size, "features_mtime_ns": stat.st_mtime_ns}


def _preload(params: FeatureParams) -> None:
    """Import the decoders and run one tiny spectrogram before the pool forks: the workers
    inherit the imported modules and the cached mel filter bank instead of each building them."""
    import numpy as np

    log_mel_segments(np.zeros(params.n_fft * 4, dtype=np.float32), params)


def _process_chunk(tasks: list[ShardTask]) -> list[dict]:
    return [process_member(task) for task in tasks]


def _run_pool(tasks: list[ShardTask], threads: int) -> Iterator[dict]:
    """Rows of ``tasks`` in completion order; a crashed worker (a decoder segfault) costs only
    the file it was on: the pool is restarted for the rest and that file is rejected. Files go
    to the workers in chunks of CHUNK_FILES (one message per file costs the parent, which shares
    the cores with the workers, ~0.3 ms a file); after a crash one by one, to find the file."""
    import multiprocessing

    pending, chunk_size = list(tasks), CHUNK_FILES
    while pending:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(threads, mp_context=context) as pool:
            chunks = [pending[i : i + chunk_size] for i in range(0, len(pending), chunk_size)]
            futures = {pool.submit(_process_chunk, chunk): chunk for chunk in chunks}
            done = set()
            try:
                for future in as_completed(futures):
                    rows = future.result()
                    done.update(id(task) for task in futures[future])
                    yield from rows
                pending = []
            except FeatureWriteError:  # the job's fault, not a file's: stop, no more writes
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            except BrokenProcessPool:
                pending = [t for t in pending if id(t) not in done]
                if threads == 1:  # one worker takes files in order: the first left crashed it
                    reason = "decoder crashed: the worker process died on this file"
                    yield _record_row(pending.pop(0), status="rejected", reason=reason)
                threads, chunk_size = 1, 1


def _with_progress(tasks: list[ShardTask], threads: int) -> Iterator[dict]:
    """Rows of ``tasks``, logging quarantined files and the rate every PROGRESS_SECONDS."""
    results = map(process_member, tasks) if threads <= 1 else _run_pool(tasks, threads)
    start = last_report = time.perf_counter()
    for done, row in enumerate(results, 1):
        if row["status"] == "rejected":
            log.warning("quarantined %s: %s", row["path"], row["reason"])
        now = time.perf_counter()
        if now - last_report >= PROGRESS_SECONDS or done == len(tasks):
            log.info("%d/%d files done (%.1f files/s)", done, len(tasks),
                     done / max(now - start, 1e-9))  # fmt: skip
            last_report = now
        yield row


def extract_shard(
    members: list[AudioFile],
    root: str | Path,
    features_dir: str | Path,
    params: FeatureParams,
    record_path: str | Path,
    threads: int = 1,
) -> list[dict]:
    """Bring every member's HDF5 up to date and write the shard record; returns its rows."""
    tasks = [ShardTask(audio, str(root), str(features_dir), params) for audio in members]
    for task in tasks:  # temporary files of a job killed while writing
        out = feature_path(features_dir, task.audio.genre, task.audio.track)
        out.with_name(f".tmp-{out.name}").unlink(missing_ok=True)
    log.info("shard of %d files in process %d, %d worker(s)", len(tasks), os.getpid(), threads)
    start = time.perf_counter()
    # One BLAS thread per process: the job's threads are the worker processes. Forked workers
    # inherit the limit (OPENBLAS_NUM_THREADS set after numpy's import would not reach BLAS).
    rows = []
    with threadpool_limits(1):
        _preload(params)
        try:
            rows.extend(_with_progress(tasks, threads))
        except FeatureWriteError as error:
            raise ShardWriteError(_write_failure(error, features_dir, rows, len(tasks))) from error
    rows.sort(key=lambda r: (r["genre"], r["track"]))
    counts = {s: sum(r["status"] == s for r in rows) for s in RECORD_STATUSES}
    log.info("shard done in %.1f s: %s", time.perf_counter() - start, counts)
    write_tsv(record_path, rows, RECORD_COLUMNS)
    return rows


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def _write_failure(error: FeatureWriteError, features_dir, done: list[dict], n_files: int) -> str:
    """The message of a shard job that cannot write its features: the directory, the free space
    there against an estimate of what the files left need (the mean size of the HDF5s written
    so far, else the segments of the file that failed), and what to do."""
    features_dir = Path(features_dir)
    written = [int(r["features_size"]) for r in done if r.get("features_size")]
    n_left = n_files - len(done)
    if written:
        per_file, basis = sum(written) / len(written), f"the {len(written)} finished HDF5s"
    else:
        per_file, basis = error.nbytes, "the segments of the file that failed"
    try:
        free = _mib(shutil.disk_usage(features_dir).free)
    except OSError:
        free = "unknown"
    needed = (
        f"about {_mib(per_file * n_left)} for the {n_left} file(s) left (estimated from {basis})"
        if per_file
        else f"space for {n_left} more file(s)"
    )
    return (
        f"the features directory {features_dir} cannot take this shard's features: {error}. "
        f"Free there: {free}; needed: {needed}. Free space there (or fix the quota or the "
        "directory's permissions) and run snakemake again: the finished feature files are kept "
        "and the rest are extracted. No audio file was "
        "quarantined for this (results/qc/rejected.tsv lists only files that cannot be read)."
    )


def collect_records(record_paths: Iterable[str | Path]) -> tuple[list[dict], list[dict]]:
    """Accepted manifest rows and rejected rows of all shard records, sorted by track."""
    accepted, rejected = [], []
    for path in record_paths:
        for row in read_tsv(path):
            (rejected if row["status"] == "rejected" else accepted).append(row)
    key = lambda r: (r["genre"], r["track"])  # noqa: E731
    return sorted(accepted, key=key), sorted(rejected, key=key)


def write_collection(
    record_paths: Iterable[str | Path],
    version: dict,
    manifest_path: str | Path,
    rejected_path: str | Path,
    version_path: str | Path,
    skipped: list[dict] = (),
    labels: dict[str, dict[str, str]] | None = None,
) -> dict:
    """Manifest, rejected list and data version of the whole collection from its shard records;
    ``skipped``: files the listing could not use (rejected too, with their reason); ``labels``:
    a label table's other columns per track (``group``, ``split``, ...), added to the manifest."""
    accepted, rejected = collect_records(record_paths)
    rejected = sorted([*rejected, *skipped], key=lambda r: (r["genre"], r["track"], r["path"]))
    label_columns = tuple(next(iter(labels.values()))) if labels else ()
    for row in accepted if labels else ():
        row.update(labels.get(f"{row['genre']}/{row['track']}", dict.fromkeys(label_columns, "")))
    write_tsv(manifest_path, accepted, MANIFEST_COLUMNS + label_columns)
    write_tsv(rejected_path, rejected, REJECTED_COLUMNS)
    version = dict(version)
    if version["md5"] is None:  # plain directory: md5 of the content listing (and label table)
        listing = version.get("table_md5", "") + "".join(
            f"{r['genre']}/{r['track']}\t{r.get('md5', '')}\n" for r in accepted + rejected
        )
        version["md5"] = hashlib.md5(listing.encode()).hexdigest()
    version.update(
        n_files=len(accepted) + len(rejected), n_accepted=len(accepted), n_rejected=len(rejected)
    )
    write_json(version_path, version)
    log.info(
        "data version %s: %d accepted, %d quarantined (see %s)",
        version["md5"],
        len(accepted),
        len(rejected),
        rejected_path,
    )
    return version


def shard_runtime_minutes(n_files: int, seconds_per_file: float, threads: int, attempt: int) -> int:
    """Slurm runtime of an extraction job: a fixed start-up allowance plus ``seconds_per_file``
    for each member, spread over its threads; longer on each retry."""
    return int(10 + -(-n_files * seconds_per_file // (60 * threads))) * attempt
