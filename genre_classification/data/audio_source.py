"""Where the audio comes from: a DVC-tracked directory (``dvc pull``), a plain directory, or a
label table.

The directories give GTZAN's layout, ``<root>/<genre>/<file>``; a label table (``path`` below a
root, ``genre``, optional ``group``, ``split``, ...) labels files anywhere below a plain or a
DVC-tracked root (FMA's ``000/000002.mp3``). Listing the collection is cheap and happens when
the workflow is parsed, so ``snakemake -n`` knows every file and its version:

* DVC: the per-file md5s of DVC's ``.dir`` listing of the tracked directory (read from the local
  cache, or from the remote without pulling the audio);
* plain directory: names, sizes and mtimes (``<size>:<mtime_ns>``); content md5s are computed by
  the parallel extraction jobs.

A DVC source is pulled shard by shard (``fetch_audio``, one job per extraction shard), so a new
data version pulls and re-extracts only the shards whose files changed. Decoding, quarantine of
bad audio and content checks happen in the extraction jobs (``genre_classification.data.shards``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from stat import S_ISREG

import yaml

from genre_classification.columns import MANIFEST_COLUMNS
from genre_classification.data.dvc_remote import remote_help
from genre_classification.data.dvc_repo import dvc_executable
from genre_classification.fileio import write_json

log = logging.getLogger(__name__)


class DataSourceError(RuntimeError):
    """The configured audio source cannot be read; the message says which key or file to fix."""


@dataclass(frozen=True)
class AudioFile:
    """One audio file of the collection: ``relpath`` under the root, and its listed version."""

    genre: str
    track: str
    relpath: str
    # DVC source: the file's content md5; plain directory: "<size>:<mtime_ns>".
    version: str

    @property
    def content_md5(self) -> str | None:
        """The content md5 when the listing already knows it (DVC), else None."""
        return None if ":" in self.version else self.version


def uses_dvc(data: dict) -> bool:
    """The audio is the DVC-tracked directory ``data.dvc.target``, pulled shard by shard:
    ``source: dvc``, or ``source: table`` without a ``data.table.root``."""
    return data["source"] == "dvc" or (data["source"] == "table" and not data["table"]["root"])


def audio_root(data: dict) -> Path:
    """The directory the files of the ``data`` config section are relative to."""
    if uses_dvc(data):
        return Path(data["dvc"]["repo"]) / data["dvc"]["target"]
    if data["source"] == "table":
        return Path(data["table"]["root"])
    return Path(data["dir"])


def _suffixes(extensions: list[str]) -> set[str]:
    return {f".{ext.lower().lstrip('.')}" for ext in extensions}


@dataclass(frozen=True)
class Collection:
    """The usable audio files, and what was found but cannot be read (with the reason). A label
    table also gives its other columns per track (``labels``: ``genre/track`` -> column ->
    value) and its own version (``version``: the table's location and md5)."""

    files: list[AudioFile]
    skipped: list[dict]
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    version: dict = field(default_factory=dict)


def printable(name: str) -> str:
    """A file name as text that can be written anywhere (bytes that are not UTF-8 escaped)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _skip_reason(parts: list[str]) -> str | None:
    try:
        "/".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8: rename it"
    if len(parts) == 1:
        return "not in a <genre> folder: not read"
    if len(parts) > 2:
        return "in a sub-folder of its <genre> folder: not read (files are read as <genre>/<file>)"
    return None


class _Listing:
    """A listing in progress: the usable files, one track id each (two files with one id are an
    error), and the skipped ones with the reason."""

    def __init__(self, where: str, id_rule: str):
        self.where, self.id_rule = where, id_rule
        self.files: list[AudioFile] = []
        self.skipped: list[dict] = []
        self.seen: dict[tuple[str, str], str] = {}

    def skip(self, genre: str, track: str, relpath: str, reason: str) -> None:
        path = f"{self.where}/{printable(relpath)}"
        self.skipped.append(
            {"genre": printable(genre), "track": printable(track), "path": path, "reason": reason}
        )

    def add(self, genre: str, track: str, relpath: str, version: str) -> None:
        if (genre, track) in self.seen:
            name = f"{genre}/{track}" if genre != UNLABELLED else track
            raise DataSourceError(
                f"two audio files give the same track id {name}: {self.seen[genre, track]} "
                f"and {relpath} in {self.where}; rename one (track ids are {self.id_rule})"
            )
        self.seen[genre, track] = relpath
        self.files.append(AudioFile(genre, track, relpath, version))

    def no_audio(self, found_as: str) -> DataSourceError:
        example = ""
        if self.skipped:
            example = f"; skipped, e.g. {self.skipped[0]['path']}: {self.skipped[0]['reason']}"
        return DataSourceError(f"no audio files {found_as}{example}")


def _collect(
    entries: list[tuple[str, str]],
    extensions: list[str],
    where: str,
    genre_dirs: Iterable[str] = (),
) -> Collection:
    """``(relpath, version)`` pairs -> the Collection of ``<genre>/<file>`` audio files; audio in
    other places, and genre folders without audio, are skipped with the reason. Two files with
    one track id and no audio at all are errors."""
    suffixes = _suffixes(extensions)
    listing = _Listing(where, "file names without extension")
    for relpath, version in sorted(entries):
        if Path(relpath).suffix.lower() not in suffixes:
            continue
        parts = relpath.split("/")
        reason = _skip_reason(parts)
        if reason:
            listing.skip(parts[0] if len(parts) > 1 else "", Path(parts[-1]).stem, relpath, reason)
            continue
        listing.add(parts[0], Path(parts[1]).stem, relpath, version)
    audio_types = ", ".join(sorted(suffixes))
    for genre in sorted(set(genre_dirs) - {audio.genre for audio in listing.files}):
        listing.skip(genre, "", genre, f"no audio files ({audio_types}) in this genre folder")
    if not listing.files:
        raise listing.no_audio(f"({audio_types}) found as {where}/<genre>/<file>")
    return Collection(listing.files, listing.skipped)


def scan_directory(root: str | Path, extensions: list[str]) -> Collection:
    """A plain ``<genre>/<file>`` directory, with ``<size>:<mtime_ns>`` versions."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(
            f"audio directory {root} does not exist: set data.dir (source: dir) or "
            "data.dvc.repo/data.dvc.target (source: dvc) in the config"
        )
    genre_dirs = [entry.name for entry in os.scandir(root) if entry.is_dir()]
    return _collect(directory_entries(root), extensions, str(root), genre_dirs)


def directory_entries(root: Path) -> list[tuple[str, str]]:
    """``(relpath, "<size>:<mtime_ns>")`` of every file below ``root``, at any depth."""
    entries = []
    for folder, _, names in os.walk(root):
        relfolder = Path(folder).relative_to(root).as_posix()
        for name in names:
            version = stat_version(os.path.join(folder, name))
            if version is not None:
                entries.append((name if relfolder == "." else f"{relfolder}/{name}", version))
    return entries


def stat_version(path: str | Path) -> str | None:
    """``<size>:<mtime_ns>`` of a regular file; None for anything else (missing, a broken link,
    a directory)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}" if S_ISREG(stat.st_mode) else None


def list_directory(root: str | Path, extensions: list[str]) -> list[AudioFile]:
    """The usable files of a plain ``<genre>/<file>`` directory (see ``scan_directory``)."""
    return scan_directory(root, extensions).files


def dvc_out(repo: Path, target: str) -> dict:
    """The ``outs`` entry of ``<repo>/<target>.dvc`` (md5 of the directory, file count)."""
    dvc_file = repo / f"{target}.dvc"
    if not dvc_file.is_file():
        raise DataSourceError(
            f"{dvc_file} not found: data.dvc.repo must be a DVC project and data.dvc.target a "
            "directory tracked with `dvc add` (run `make demo-data` for the demo data)"
        )
    return yaml.safe_load(dvc_file.read_text())["outs"][0]


def dvc_entries(repo: str | Path, target: str) -> list[tuple[str, str]]:
    """``(relpath, md5)`` of every file of the DVC-tracked directory as its ``.dvc`` file
    describes it. Reads DVC's ``.dir`` listing (from the local cache, else from the remote: the
    listing only, not the audio), so the version of every file is known before ``dvc pull``."""
    from dvc.api import DVCFileSystem

    repo = Path(repo)
    dvc_out(repo, target)
    try:
        found = DVCFileSystem(str(repo)).find(target, detail=True)
    except Exception as error:
        raise DataSourceError(
            f"cannot list {target} of the DVC project {repo}: {type(error).__name__}: {error}. "
            f"{remote_help(repo, error)}"
        ) from error
    # With the audio pulled, DVC's own entry is under "dvc_info" (beside the workspace's stat);
    # files in the workspace that DVC does not track have none and are not part of the version.
    entries = [
        (Path(name).relative_to(target).as_posix(), info.get("dvc_info", info).get("md5"))
        for name, info in found.items()
    ]
    return [(relpath, md5) for relpath, md5 in entries if md5]


def scan_dvc(repo: str | Path, target: str, extensions: list[str]) -> Collection:
    """The ``<genre>/<file>`` audio of a DVC-tracked directory, with DVC's md5s."""
    return _collect(dvc_entries(repo, target), extensions, f"{repo}/{target}")


def list_dvc(repo: str | Path, target: str, extensions: list[str]) -> list[AudioFile]:
    return scan_dvc(repo, target, extensions).files


# --- a label table: path (below a root) and genre per file -----------------------------------

TABLE_COLUMNS = ("path", "genre")


@dataclass(frozen=True)
class LabelRow:
    """One row of a label table: its line, the file below the root, its genre, other columns."""

    line: int
    relpath: str
    genre: str
    labels: dict[str, str]


def read_label_table(data: dict) -> tuple[str, bytes]:
    """Where the label table ``data.table.path`` is, and its content. With a plain root (or an
    absolute path) it is a file; with a DVC root a file of the DVC project ``data.dvc.repo``
    (tracked by git or by DVC), read through DVC: a DVC-tracked table comes from the cache or
    the remote, and no audio is pulled."""
    path = data["table"]["path"]
    if not uses_dvc(data) or Path(path).is_absolute():
        try:
            return path, Path(path).read_bytes()
        except OSError as error:
            raise DataSourceError(
                f"label table {path} (data.table.path) cannot be read: {error.strerror}"
            ) from error
    from dvc.api import DVCFileSystem

    repo = data["dvc"]["repo"]
    try:
        with DVCFileSystem(str(repo)).open(path, "rb") as handle:
            return f"{repo}/{path}", handle.read()
    except Exception as error:
        raise DataSourceError(
            f"label table {path} (data.table.path) cannot be read from the DVC project {repo} "
            f"(data.dvc.repo; data.table.root is not set): {type(error).__name__}: {error}. "
            "Commit or `dvc add` the table there, or set data.table.root for audio in a plain "
            "directory."
        ) from error


def parse_label_table(content: bytes, where: str) -> list[LabelRow]:
    """The rows of a label table: tab-separated, comma-separated if its name ends in ``.csv``;
    columns ``path`` (relative to the root) and ``genre``, any others kept as labels. A missing
    column, an empty or unusable genre, a bad or repeated path are errors naming the line."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataSourceError(f"label table {where} is not UTF-8 text: {error}") from error
    delimiter = "," if where.lower().endswith(".csv") else "\t"
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = columns
    missing = [name for name in TABLE_COLUMNS if name not in columns]
    if missing:
        separated = "comma" if delimiter == "," else "tab"
        raise DataSourceError(
            f"label table {where} has no column {' and '.join(missing)} (its header: "
            f"{', '.join(columns) or 'none'}); it needs path (relative to the audio root) and "
            f"genre, {separated}-separated, optionally group, split and other columns"
        )
    clash = [name for name in columns if name in MANIFEST_COLUMNS and name not in TABLE_COLUMNS]
    if clash:
        raise DataSourceError(
            f"label table {where}: rename the column(s) {', '.join(clash)}; the workflow writes "
            "columns of that name itself (results/data/manifest.tsv)"
        )
    rows, lines = [], {}
    for row in reader:
        line = reader.line_num
        relpath, genre = _table_path(row["path"], where, line), (row["genre"] or "").strip()
        if not genre:
            raise DataSourceError(f"label table {where}, line {line}: {relpath} has no genre")
        if "/" in genre or genre in (".", ".."):
            raise DataSourceError(
                f"label table {where}, line {line}: genre {genre!r} cannot name a directory "
                "(results/features/<genre>/); write it without '/'"
            )
        if relpath in lines:
            raise DataSourceError(
                f"label table {where}, line {line}: {relpath} is listed twice (also line "
                f"{lines[relpath]}); give each file one row"
            )
        lines[relpath] = line
        labels = {name: (row[name] or "").strip() for name in columns if name not in TABLE_COLUMNS}
        rows.append(LabelRow(line, relpath, genre, labels))
    if not rows:
        raise DataSourceError(f"label table {where} has no rows")
    return rows


def _table_path(name: str | None, where: str, line: int) -> str:
    """A table row's path, normalised (``./a//b.wav`` -> ``a/b.wav``); it must stay below the
    root."""
    if not (name or "").strip():
        raise DataSourceError(f"label table {where}, line {line}: empty path")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DataSourceError(
            f"label table {where}, line {line}: path {name} must be relative to the audio root "
            "(data.table.root, or data.dvc.target) and stay below it"
        )
    return path.as_posix()


def scan_table(data: dict) -> Collection:
    """The files of the label table ``data.table.path`` below its root, with their versions
    (plain root: ``<size>:<mtime_ns>`` of each listed file; DVC root: DVC's md5s, no pull).
    Rows whose file is missing or has an extension not in ``data.extensions`` are skipped with
    the reason; track ids are the paths without extension, ``/`` written ``%2F``."""
    where, content = read_label_table(data)
    rows = parse_label_table(content, where)
    root = audio_root(data)
    if uses_dvc(data):
        versions = dict(dvc_entries(data["dvc"]["repo"], data["dvc"]["target"]))
        absent = f"not in the DVC-tracked {data['dvc']['target']}"
    elif root.is_dir():
        versions = {row.relpath: stat_version(root / row.relpath) for row in rows}
        absent = "no such file"
    else:
        raise DataSourceError(f"audio directory {root} (data.table.root) does not exist")
    suffixes = _suffixes(data["extensions"])
    listing = _Listing(str(root), "the table's paths without extension")
    labels = {}
    for row in sorted(rows, key=lambda r: r.relpath):
        track, version = tree_track_id(row.relpath), versions.get(row.relpath)
        if PurePosixPath(row.relpath).suffix.lower() not in suffixes:
            reason = f"extension not in data.extensions ({', '.join(sorted(suffixes))})"
        elif version is None:
            reason = absent
        else:
            listing.add(row.genre, track, row.relpath, version)
            labels[f"{row.genre}/{track}"] = row.labels
            continue
        listing.skip(row.genre, track, row.relpath, f"{reason} (line {row.line} of {where})")
    if not listing.files:
        raise listing.no_audio(f"of the label table {where} found below {root}")
    version = {"table": where, "table_md5": hashlib.md5(content).hexdigest()}
    return Collection(listing.files, listing.skipped, labels, version)


def scan_collection(data: dict) -> Collection:
    """Every audio file the ``data`` config section names, with its version, and the skipped."""
    if data["source"] == "table":
        return scan_table(data)
    if data["source"] == "dvc":
        return scan_dvc(data["dvc"]["repo"], data["dvc"]["target"], data["extensions"])
    return scan_directory(data["dir"], data["extensions"])


def list_collection(data: dict) -> list[AudioFile]:
    return scan_collection(data).files


def listing_digest(files: list[AudioFile]) -> str:
    """md5 of the listing (paths and versions): changes whenever any file does."""
    digest = hashlib.md5()
    for audio in files:
        digest.update(f"{audio.relpath}\t{audio.version}\n".encode())
    return digest.hexdigest()


def file_md5(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_pull(repo: Path, target: str, relpaths: list[str]) -> None:
    """``dvc pull`` of these files of the tracked directory (DVC's granular pull; concurrent
    pulls of other files wait for the repository lock)."""
    command = [dvc_executable(), "--wait-for-lock", "pull"]
    command += [f"{target}/{relpath}" for relpath in relpaths]
    log.info("dvc pull of %d files in %s", len(relpaths), repo)
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    log.info("%s%s", result.stdout, result.stderr)
    if result.returncode != 0:
        raise DataSourceError(
            f"`dvc pull` of {len(relpaths)} files of {target} failed in {repo} "
            f"(exit {result.returncode}):\n{result.stderr.strip()}\n"
            f"{remote_help(repo, result.stderr)} Or use a plain directory with "
            "`data: {source: dir, dir: ...}`."
        )


def fetch_audio(data: dict, members: list[AudioFile], fetched_path: str | Path) -> dict:
    """Make ``members`` present in the workspace of the DVC source (``dvc pull``) and record
    which versions were fetched."""
    repo, target = Path(data["dvc"]["repo"]), data["dvc"]["target"]
    dvc_pull(repo, target, [audio.relpath for audio in members])
    fetched = {f"{audio.genre}/{audio.track}": audio.version for audio in members}
    write_json(fetched_path, {"location": str(audio_root(data)), "files": fetched})
    return fetched


def data_version(data: dict, collection: Collection | None = None) -> dict:
    """Where the audio is and its version: DVC's md5 of the directory; for a plain directory
    None (the content version is computed from the extracted files' md5s). A label table adds
    its location and md5 (``collection.version``); with a DVC root the version is the md5 of
    the table's md5 and the digest of its files' DVC md5s (``listing_md5``)."""
    if data["source"] == "dvc":
        md5 = dvc_out(Path(data["dvc"]["repo"]), data["dvc"]["target"])["md5"]
    else:
        md5 = None
    version = {"source": data["source"], "md5": md5, "location": str(audio_root(data))}
    if collection is not None:
        version.update(collection.version)
    if data["source"] == "table" and uses_dvc(data):
        version["listing_md5"] = listing_digest(collection.files)
        both = f"{version['table_md5']}\n{version['listing_md5']}\n"
        version["md5"] = hashlib.md5(both.encode()).hexdigest()
    return version


# --- unlabelled audio: the workflow's predict sets (predict.predict_set) --------------------------

# A predict set has no genres: its files all get this placeholder genre, so that their feature
# files and shard records have the layout of the training data (<features>/<genre>/<track>.h5).
UNLABELLED = "unlabelled"


def tree_track_id(relpath: str) -> str:
    """Track id of a file anywhere below a root: its relative path without extension, with
    ``%`` and ``/`` written ``%25`` and ``%2F`` (unique, and a valid file name)."""
    stem = Path(relpath).with_suffix("").as_posix()
    return stem.replace("%", "%25").replace("/", "%2F")


def _collect_tree(entries: list[tuple[str, str]], extensions: list[str], where: str):
    """``(relpath, version)`` pairs -> sorted unlabelled AudioFiles of every file with an audio
    extension, at any depth; an error for two files with one track id or no audio at all."""
    suffixes = _suffixes(extensions)
    listing = _Listing(where, "relative paths without extension")
    for relpath, version in sorted(entries):
        if Path(relpath).suffix.lower() in suffixes:
            listing.add(UNLABELLED, tree_track_id(relpath), relpath, version)
    if not listing.files:
        raise listing.no_audio(f"({', '.join(sorted(suffixes))}) below {where}")
    return listing.files


def list_tree(root: str | Path, extensions: list[str]) -> list[AudioFile]:
    """Every audio file below a plain directory (flat or nested), with ``<size>:<mtime_ns>``."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"audio directory {root} does not exist")
    return _collect_tree(directory_entries(root), extensions, str(root))


def list_dvc_tree(repo: str | Path, target: str, extensions: list[str]) -> list[AudioFile]:
    """Every audio file of a DVC-tracked directory (flat or nested), with DVC's md5s."""
    return _collect_tree(dvc_entries(repo, target), extensions, f"{repo}/{target}")


def list_unlabelled(data: dict) -> list[AudioFile]:
    """Every audio file of a ``data``-like section (``source``, ``dir`` or ``dvc``,
    ``extensions``) at any depth, as unlabelled files."""
    if data["source"] == "dvc":
        return list_dvc_tree(data["dvc"]["repo"], data["dvc"]["target"], data["extensions"])
    return list_tree(data["dir"], data["extensions"])
