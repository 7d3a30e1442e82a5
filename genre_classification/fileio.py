"""Result files an interrupted job never leaves half-written, and locks between jobs."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The csv module refuses a field over 128 KiB; a TSV of this workflow is read whatever a field
# holds (a benchmark record's params column, a long path).
csv.field_size_limit(2**31 - 1)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; rename it onto ``path`` on success.

    The temporary name keeps the suffix (``.tmp-model.keras``): Keras and h5py look at it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: dict, default=None) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=default) + "\n")


def write_text_if_changed(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (atomically) unless the file holds it already: its mtime moves
    only when its content does (the files the workflow writes when it is parsed, which are
    inputs of jobs)."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return path
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def read_tsv(path: str | Path | None) -> list[dict]:
    """The rows of a TSV as dicts of strings; none for no path or a missing file."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def write_tsv(path: str | Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    """Write ``rows`` (dicts with at least ``columns``) as a TSV of those columns, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: row[key] for key in columns} for row in rows)


def write_frame(path: str | Path, frame, **to_csv) -> None:
    """``frame.to_csv(path, **to_csv)`` (a pandas DataFrame), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv)


class LockedError(RuntimeError):
    """Another process holds the lock."""


@contextmanager
def exclusive_lock(
    path: str | Path, timeout_s: float | None = None, what: str = ""
) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if missing) while in the block.

    ``timeout_s``: give up after that many seconds with ``LockedError`` naming the holder (its
    pid, host and start time, recorded in the file); ``None``: wait as long as it takes. The
    kernel drops the lock when the holder exits, even when killed, so a stale file is harmless.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown process"
                    raise LockedError(
                        f"{what or path} is in use by {holder} (lock file {path}); waited "
                        f"{timeout_s:g} s. Wait for that job to finish, or stop it; a killed "
                        "job releases the lock by itself."
                    ) from None
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
            handle.flush()
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
