"""Shards: the unit of scheduling of feature extraction is a shard of files, the unit of output
and of recompute stays one HDF5 file per audio file (``genre_classification.features.shards``
runs a shard).

A file's shard is a hash of ``<genre>/<track>`` modulo the shard count, a power of two sized by
``extraction.files_per_shard``. Adding, changing or removing a file changes only its own shard's
member list; only when the collection crosses a power of two does the count double or halve
(every shard job reruns then, and recomputes nothing: the extraction keeps every HDF5 that is
still current).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from genre_classification.data.audio_source import AudioFile


def shard_count(n_files: int, files_per_shard: int) -> int:
    """The smallest power of two of shards that holds ``n_files`` at ``files_per_shard`` each."""
    needed = max(1, math.ceil(n_files / files_per_shard))
    return 1 << (needed - 1).bit_length()


def shard_index(genre: str, track: str, n_shards: int) -> int:
    digest = hashlib.md5(f"{genre}/{track}".encode(errors="surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


def shard_name(index: int) -> str:
    return f"{index:05d}"


def assign_shards(files: Iterable[AudioFile], files_per_shard: int) -> dict[str, list[AudioFile]]:
    """Shard name -> its member files (empty shards are left out)."""
    files = sorted(files, key=lambda audio: (audio.genre, audio.track))
    n_shards = shard_count(len(files), files_per_shard)
    shards: dict[str, list[AudioFile]] = {}
    for audio in files:
        shards.setdefault(shard_name(shard_index(audio.genre, audio.track, n_shards)), []).append(
            audio
        )
    return dict(sorted(shards.items()))
