"""Packed segment arrays: every segment of an extraction shard in one ``.npy`` file, the
training input.

The per-file HDF5s (``features.write_features``) stay the unit of output and recompute; a pack
is a cache built from them once per shard (rule ``pack_features``, one job per shard, in
parallel). Training reads batches of segments from the packs with ``os.pread``: a batch of
random segments is one read per segment from a handful of open files, whatever the size of the
collection, and nothing is mapped into the reader's memory (page-cache pages are not the
process's RSS), so a training job's memory does not grow with the data.

A pack ``<features_dir>/.packs/<shard>.npy`` is a plain NumPy array ``(n_segments, n_mels,
frames)`` of little-endian float32 (``numpy.load(path, mmap_mode="r")`` reads it too); its
index ``<shard>.tsv`` lists the tracks (``PACK_INDEX_COLUMNS``): which rows of the pack hold
each feature file's segments. Its band sums ``<shard>.sums.npy`` (``band_sums`` of each file, in
index order) give a training set's normalisation statistics without reading its segments.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from genre_classification.columns import PACK_INDEX_COLUMNS
from genre_classification.features.features import read_features
from genre_classification.fileio import atomic_path, write_frame

log = logging.getLogger(__name__)

PACKS = ".packs"
DTYPE = np.dtype("<f4")


def pack_path(features_dir: str | Path, shard: str) -> Path:
    """The pack of ``shard`` in ``features_dir``; its index is ``index_path`` of it."""
    return Path(features_dir) / PACKS / f"{shard}.npy"


def index_path(pack: str | Path) -> Path:
    return Path(pack).with_suffix(".tsv")


def sums_path(pack: str | Path) -> Path:
    return Path(pack).with_suffix(".sums.npy")


def band_sums(x: np.ndarray) -> np.ndarray:
    """``(2, n_mels)`` float64: the sum over segments and frames of ``x`` (``(n, n_mels,
    frames)``) per mel band, and of its square."""
    x = x.astype(np.float64)
    return np.stack([x.sum(axis=(0, 2)), (x**2).sum(axis=(0, 2))])


def accepted_files(record_path: str | Path) -> pd.DataFrame:
    """The files of a shard record that have features (``genre track features n_segments``)."""
    record = pd.read_csv(record_path, sep="\t", dtype=str, keep_default_na=False)
    return record[record["status"] != "rejected"]


def pack_shard(record_path: str | Path, pack: str | Path) -> int:
    """The pack of a shard record's accepted files (rule ``pack_features``)."""
    return write_pack(accepted_files(record_path), pack, what=str(record_path))


def write_pack(files: pd.DataFrame, pack: str | Path, what: str = "the file list") -> int:
    """Pack the feature files ``files`` (rows with ``genre track features n_segments``) into
    ``pack`` (file by file: memory is one file's segments) and write its index and band sums
    beside it. Returns the number of segments."""
    start = time.perf_counter()
    n_segments = files["n_segments"].astype(int).to_numpy()
    total = int(n_segments.sum())
    shape, sums = None, []
    with atomic_path(pack) as tmp, open(tmp, "wb") as handle:
        for i, path in enumerate(files["features"]):
            x, _ = read_features(path)
            if x.ndim != 3 or len(x) != n_segments[i]:
                raise ValueError(
                    f"{path}: {x.shape} does not match {what} "
                    f"({n_segments[i]} segments): rerun the shard's extraction"
                )
            if shape is None:
                shape = x.shape[1:]
                header = {"descr": DTYPE.str, "fortran_order": False, "shape": (total, *shape)}
                np.lib.format.write_array_header_2_0(handle, header)
            elif x.shape[1:] != shape:
                raise ValueError(f"{path}: segment shape {x.shape[1:]} != {shape} of the shard")
            handle.write(np.ascontiguousarray(x, dtype=DTYPE).tobytes())
            sums.append(band_sums(x))
        if shape is None:  # a shard without accepted files: an empty, valid array
            header = {"descr": DTYPE.str, "fortran_order": False, "shape": (0, 0, 0)}
            np.lib.format.write_array_header_2_0(handle, header)
    first = np.concatenate([[0], np.cumsum(n_segments)[:-1]]).astype(int) if total else []
    index = pd.DataFrame(
        {
            "genre": files["genre"].to_numpy(),
            "track": files["track"].to_numpy(),
            "features": files["features"].to_numpy(),
            "n_segments": n_segments,
            "first_row": first,
        }
    )
    write_frame(index_path(pack), index[list(PACK_INDEX_COLUMNS)], sep="\t", index=False)
    with atomic_path(sums_path(pack)) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.stack(sums) if sums else np.zeros((0, 2, 0)))
    log.info(
        "%s: %d files, %d segments (%.0f MB) in %.1f s",
        pack, len(files), total, total * np.prod(shape or (0,)) * 4 / 1e6,
        time.perf_counter() - start,
    )  # fmt: skip
    return total


def read_index(packs: Iterable[str | Path]) -> pd.DataFrame:
    """The indexes of ``packs``, with ``pack``: the position of a track's pack in ``packs``,
    and ``entry``: its row in that pack's index (and band sums)."""
    frames = []
    for i, pack in enumerate(packs):
        frame = pd.read_csv(
            index_path(pack), sep="\t", dtype={"genre": str, "track": str, "features": str}
        )
        frame["pack"], frame["entry"] = i, np.arange(len(frame))
        frames.append(frame)
    if not frames:
        raise ValueError("no pack index files given")
    return pd.concat(frames, ignore_index=True)


def _data_offset(path: Path) -> tuple[int, tuple[int, ...]]:
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(handle)
        if fortran or np.dtype(dtype) != DTYPE:
            raise ValueError(f"{path}: not a C-order float32 pack; delete it to rebuild it")
        return handle.tell(), shape


class PackReader:
    """Reads rows of several packs (thread-safe: ``os.pread`` on descriptors kept open)."""

    def __init__(self, pack_paths: list[str | Path]):
        self.paths = [Path(p) for p in pack_paths]
        self.segment_shape: tuple[int, ...] | None = None
        self._fds, self.offsets = [], []
        for path in self.paths:
            offset, shape = _data_offset(path)
            if shape[0] and self.segment_shape is None:
                self.segment_shape = tuple(shape[1:])
            elif shape[0] and tuple(shape[1:]) != self.segment_shape:
                raise ValueError(f"{path}: segment shape {shape[1:]} != {self.segment_shape}")
            self._fds.append(os.open(path, os.O_RDONLY))
            self.offsets.append(offset)
        self._row_bytes = int(np.prod(self.segment_shape or (0,))) * DTYPE.itemsize

    def read(self, packs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Segments ``rows[i]`` of pack ``packs[i]``, in the given order: one read per run of
        consecutive rows of one pack, straight into the output when the run's places there
        are consecutive too (a shuffled batch: one read per segment; a track: one read)."""
        n = len(rows)
        out = np.empty((n, *self.segment_shape), dtype=DTYPE)
        if not n:
            return out
        order = np.lexsort((rows, packs))
        sorted_packs, sorted_rows = packs[order], rows[order]
        breaks = np.flatnonzero((np.diff(sorted_packs) != 0) | (np.diff(sorted_rows) != 1)) + 1
        starts, ends = np.r_[0, breaks], np.r_[breaks, n]
        # a run is direct when its places in the output are consecutive as well
        gaps = np.r_[0, np.cumsum(np.diff(order) != 1)]
        direct = gaps[ends - 1] == gaps[starts]
        # plain ints and one memoryview: per-segment Python work is most of a shuffled read
        view, size = memoryview(out).cast("B"), self._row_bytes
        for start, end, pack, row, place, whole in zip(
            starts.tolist(), ends.tolist(), sorted_packs[starts].tolist(),
            sorted_rows[starts].tolist(), order[starts].tolist(), direct.tolist(), strict=True,
        ):  # fmt: skip
            if whole:
                self._pread(pack, row, view[place * size : (place + end - start) * size])
            else:
                places = order[start:end]
                target = np.empty((end - start, *self.segment_shape), dtype=DTYPE)
                self._pread(pack, row, memoryview(target).cast("B"))
                out[places] = target
        return out

    def _pread(self, pack: int, row: int, view: memoryview) -> None:
        got = os.preadv(self._fds[pack], [view], self.offsets[pack] + row * self._row_bytes)
        if got != len(view):
            raise OSError(
                f"{self.paths[pack]}: short read at row {row} (truncated pack?): delete it "
                "and rerun snakemake to rebuild it"
            )

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __del__(self):
        self.close()
