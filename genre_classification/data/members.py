"""The listing's files as the jobs read them: a shard's member list and what collect_features
needs besides the shard records, written when the workflow is parsed (``rules/common.smk``) and
only when their content changes. This module imports no feature code, so fetch_audio's code
record does not change with ``features/``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from genre_classification.data.audio_source import AudioFile
from genre_classification.fileio import write_text_if_changed


def write_member_list(path: str | Path, members: Iterable[AudioFile]) -> Path:
    """A shard's files as the JSON its jobs read (``read_member_list``; JSON keeps any byte of
    a file name), written when the workflow is parsed and only when its content changed: the
    file is an input of the shard's jobs, so a changed, added or removed file reruns only its
    own shard, and a job's parameters (and its benchmark record) stay small whatever the
    shard's size."""
    rows = [[audio.genre, audio.track, audio.relpath, audio.version] for audio in members]
    return write_text_if_changed(path, "[\n" + ",\n".join(map(json.dumps, rows)) + "\n]\n")


def write_listing_extras(path: str | Path, skipped: list[dict], labels: dict) -> Path:
    """What collect_features needs of the listing besides the shard records: the files it
    skipped (with the reason) and a label table's other columns per track; a file written at
    parse time like the member lists, not a job parameter that grows with the collection."""
    text = json.dumps({"skipped": skipped, "labels": labels}, indent=0, sort_keys=True) + "\n"
    return write_text_if_changed(path, text)


def read_listing_extras(path: str | Path | None) -> tuple[list[dict], dict]:
    """(skipped, labels) of ``write_listing_extras``; none for no file (a predict set)."""
    if not path:
        return [], {}
    extras = json.loads(Path(path).read_text())
    return extras["skipped"], extras["labels"]


def read_member_list(path: str | Path) -> list[AudioFile]:
    """The files of a shard's member list (``write_member_list``)."""
    try:
        return [AudioFile(*row) for row in json.loads(Path(path).read_text())]
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{path} is not a shard member list ({error}): delete it and rerun snakemake"
        ) from error
