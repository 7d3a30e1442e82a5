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

A DVC source is fetched shard by shard (``fetch_audio``, one job per extraction shard), so a new
data version pulls and re-extracts only the shards whose files changed. Decoding, quarantine
of bad audio and content checks happen in the extraction jobs
(``genre_classification.features.shards``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from stat import S_ISDIR, S_ISLNK, S_ISREG

import yaml

from genre_classification.columns import MANIFEST_COLUMNS
from genre_classification.data import dvc_repo
from genre_classification.data.dvc_remote import remote_help
from genre_classification.fileio import write_json
from genre_classification.redact import redact

# Every extension data.extensions accepts (the schema's enum): m4a, mp4 and aac are decoded
# with ffmpeg, the others with libsndfile.
READABLE_EXTENSIONS = (
    "wav",
    "wave",
    "flac",
    "ogg",
    "oga",
    "opus",
    "mp3",
    "m4a",
    "mp4",
    "aac",
    "aif",
    "aiff",
    "aifc",
    "au",
    "snd",
)

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
    escapes: dict[str, tuple[str, bool]] | None = None,
) -> Collection:
    """``(relpath, version)`` pairs -> the Collection of ``<genre>/<file>`` audio files; audio in
    other places, genre folders without audio, and symbolic links leaving the root
    (``escapes``, from ``walk_files``) are skipped with the reason. Two files with one track id
    and no audio at all are errors."""
    suffixes = _suffixes(extensions)
    listing = _Listing(where, "file names without extension")
    escapes = escapes or {}
    _skip_escapes(listing, escapes, suffixes, where, _genre_ids)
    for relpath, version in sorted(entries):
        if Path(relpath).suffix.lower() not in suffixes or _escaped(relpath, escapes):
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


def scan_directory(
    root: str | Path, extensions: list[str], follow_links: bool = False
) -> Collection:
    """A plain ``<genre>/<file>`` directory, with ``<size>:<mtime_ns>`` versions; a symbolic
    link leaving the root is skipped with the reason unless ``follow_links``."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(
            f"audio directory {root} does not exist: set data.dir (source: dir) or "
            "data.dvc.repo/data.dvc.target (source: dvc) in the config"
        )
    entries, escapes = walk_files(root, follow_links)
    genre_dirs = [e.name for e in os.scandir(root) if e.is_dir() and e.name not in escapes]
    return _collect(entries, extensions, str(root), genre_dirs, escapes)


LINK_ADVICE = "copy it below the root or set data.follow_links: true"


def resolved_bounds(root: str | Path, also_inside: Iterable[str | Path] = ()) -> tuple[str, ...]:
    """The resolved root (and other directories that count as inside it: a DVC cache)."""
    return tuple(os.path.realpath(path) for path in (root, *also_inside))


def leaves(target: str, bounds: tuple[str, ...]) -> bool:
    """Whether the resolved path ``target`` lies outside every directory of ``bounds``."""
    return target not in bounds and not target.startswith(_prefixes(bounds))


def _prefixes(folders: Iterable[str]) -> tuple[str, ...]:
    return tuple(folder.rstrip("/") + "/" for folder in folders)


def link_reason(target: str, root: str | Path, folder: bool = False) -> str:
    """The skip reason of a symbolic link (a file's, or a folder's) that leaves its root."""
    what = "a folder" if folder else "a file"
    return (
        f"symbolic link to {what} at {target} leaves the audio root {os.path.realpath(root)}: "
        f"{LINK_ADVICE}"
    )


def walk_files(
    root: Path,
    follow_links: bool = False,
    also_inside: Iterable[str | Path] = (),
    versions: bool = True,
) -> tuple[list[tuple[str, str | None]], dict[str, tuple[str, bool]]]:
    """``(relpath, "<size>:<mtime_ns>")`` of every regular file below ``root``, at any depth
    (the version None with ``versions=False``: no ``stat`` at all), and the symbolic links that
    leave it: ``relpath -> (resolved target, is a folder)``, neither listed nor followed (unless
    ``follow_links``). Links that stay inside the root (or ``also_inside``: a DVC cache, whose
    entries are taken to be files) are followed, folders too, each folder target once (a link
    to an ancestor does not loop). Only a link costs a look at its target (``resolve_link``):
    ``DirEntry.is_symlink`` needs no ``stat``."""
    bounds = resolved_bounds(root, also_inside)
    trusted = _prefixes(bounds[1:])
    entries, escapes, visited, folders = [], {}, {bounds[0]}, {}
    stack = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            listing = os.scandir(folder)
        except OSError:
            continue
        with listing:
            for entry in listing:
                relpath, target = prefix + entry.name, None
                if entry.is_symlink():
                    target, is_dir = resolve_link(entry.path, folders, trusted)
                    if not follow_links and leaves(target, bounds):
                        escapes[relpath] = (target, is_dir)
                        continue
                else:
                    try:
                        is_dir = entry.is_dir()  # no stat: the file type is in the entry
                    except OSError:
                        is_dir = False
                if is_dir:
                    if target is None or target not in visited:
                        visited.add(target)
                        stack.append((entry.path, f"{relpath}/"))
                elif not versions:
                    entries.append((relpath, None))
                else:
                    version = stat_version(entry.path)
                    if version is not None:
                        entries.append((relpath, version))
    return entries, escapes


def resolve_link(
    path: str, folders: dict[str, str], trusted: tuple[str, ...] = ()
) -> tuple[str, bool]:
    """``os.path.realpath`` of the symbolic link ``path``, and whether it is a folder; cheaper
    for many links into few folders (a DVC cache: ``realpath`` looks at every component of
    every path): the link's target with its folder resolved once (``folders`` caches them),
    and one ``lstat`` of the target, which must not be a link itself (else ``realpath``). A
    target directly in a ``trusted`` folder (prefixes ending in ``/``: a DVC cache, which holds
    files only) needs no ``lstat``."""
    link = os.readlink(path)
    target = link if link.startswith("/") else os.path.join(os.path.dirname(path), link)
    parent, _, name = target.rpartition("/")
    real_parent = folders.get(parent)
    if real_parent is None:
        real_parent = folders[parent] = os.path.realpath(parent or "/")
    resolved = f"{real_parent.rstrip('/')}/{name}"
    if name in ("", ".", ".."):
        mode = None
    elif trusted and resolved.startswith(trusted):
        return resolved, False
    else:
        try:
            mode = os.lstat(resolved).st_mode
        except OSError:  # a broken link
            return resolved, False
    if mode is None or S_ISLNK(mode):
        resolved = os.path.realpath(path)
        return resolved, os.path.isdir(resolved)
    return resolved, S_ISDIR(mode)


def directory_entries(root: Path, follow_links: bool = False) -> list[tuple[str, str]]:
    """``(relpath, "<size>:<mtime_ns>")`` of every file below ``root``, at any depth, but for
    those behind a symbolic link leaving it (``walk_files``)."""
    return walk_files(root, follow_links)[0]


def stat_version(path: str | Path) -> str | None:
    """``<size>:<mtime_ns>`` of a regular file; None for anything else (missing, a broken link,
    a directory)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}" if S_ISREG(stat.st_mode) else None


def _escaped(relpath: str, escapes: dict[str, tuple[str, bool]]) -> bool:
    """Whether ``relpath`` is a link that leaves the root, or lies below one."""
    if relpath in escapes:
        return True
    parts = relpath.split("/")
    return any("/".join(parts[:i]) in escapes for i in range(1, len(parts)))


def _escape_reason(relpath: str, escapes: dict, root) -> str | None:
    """The skip reason of ``relpath`` if it is, or lies below, a link leaving the root."""
    parts = relpath.split("/")
    for i in range(len(parts), 0, -1):
        if "/".join(parts[:i]) in escapes:
            target, folder = escapes["/".join(parts[:i])]
            return link_reason(target, root, folder)
    return None


def table_versions(
    root: str | Path, relpaths: list[str], follow_links: bool = False
) -> tuple[dict[str, str | None], dict[str, str]]:
    """A label table's files below a plain root: ``relpath -> "<size>:<mtime_ns>"`` (None:
    missing, not a regular file), and ``relpath -> reason`` of those reached through a symbolic
    link that leaves the root (unless ``follow_links``). One ``lstat`` per file, a ``realpath``
    per folder, and ``resolve_link`` per link."""
    bounds = resolved_bounds(root)
    versions, reasons, folders, link_folders = {}, {}, {}, {}
    for relpath in relpaths:
        path = os.path.join(root, relpath)
        try:
            stat = os.lstat(path)
        except OSError:
            versions[relpath] = None
            continue
        if not follow_links:
            parent = os.path.dirname(relpath)
            if parent not in folders:
                folders[parent] = os.path.realpath(os.path.join(root, parent))
            if leaves(folders[parent], bounds):
                reasons[relpath] = link_reason(folders[parent], root, folder=True)
                continue
        if S_ISLNK(stat.st_mode):
            target = resolve_link(path, link_folders)[0]
            if not follow_links and leaves(target, bounds):
                reasons[relpath] = link_reason(target, root)
                continue
            versions[relpath] = stat_version(path)
        elif S_ISREG(stat.st_mode):
            versions[relpath] = f"{stat.st_size}:{stat.st_mtime_ns}"
        else:
            versions[relpath] = None
    return versions, reasons


def _skip_escapes(listing, escapes: dict, suffixes: set[str], root, ids) -> None:
    """Skip, with the reason, each link leaving the root: folders, and audio files."""
    for relpath, (target, folder) in sorted(escapes.items()):
        if folder or Path(relpath).suffix.lower() in suffixes:
            genre, track = ids(relpath, folder)
            listing.skip(genre, track, relpath, link_reason(target, root, folder))


def _genre_ids(relpath: str, folder: bool) -> tuple[str, str]:
    """(genre, track) of a skipped ``<genre>/<file>`` path (or folder)."""
    parts = relpath.split("/")
    if folder:
        return parts[0], "/".join(parts[1:])
    return (parts[0] if len(parts) > 1 else ""), Path(parts[-1]).stem


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


def dvc_cache_dirs(repo: str | Path) -> list[str]:
    """The DVC project's cache directories (``cache.dir``, ``.dvc/cache`` by default): the
    workspace's files may be links into them (``cache.type`` symlink or hardlink)."""
    dirs = [str(Path(repo) / ".dvc" / "cache")]
    try:
        from dvc.api import DVCFileSystem

        cache = DVCFileSystem(str(repo)).repo.cache
        dirs += [odb.path for odb in (cache.local, getattr(cache, "legacy", None)) if odb]
    except Exception as error:  # an unreadable DVC config: the listing itself will say so
        log.debug("DVC cache of %s not found: %s", repo, error)
    return dirs


def dvc_workspace_escapes(
    repo: str | Path, target: str, follow_links: bool = False
) -> dict[str, tuple[str, bool]]:
    """The symbolic links of the DVC workspace ``<repo>/<target>`` (as far as it is checked out)
    that leave it and the project's DVC cache (links into the cache are DVC's own)."""
    workspace = Path(repo) / target
    if follow_links or not workspace.is_dir():
        return {}
    return walk_files(workspace, also_inside=dvc_cache_dirs(repo), versions=False)[1]


def scan_dvc(
    repo: str | Path, target: str, extensions: list[str], follow_links: bool = False
) -> Collection:
    """The ``<genre>/<file>`` audio of a DVC-tracked directory, with DVC's md5s; a file whose
    workspace copy is a link leaving the workspace and the DVC cache is skipped."""
    escapes = dvc_workspace_escapes(repo, target, follow_links)
    return _collect(dvc_entries(repo, target), extensions, f"{repo}/{target}", (), escapes)


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
    follow_links = data.get("follow_links", False)  # the workflow's config always has it
    if uses_dvc(data):
        versions = dict(dvc_entries(data["dvc"]["repo"], data["dvc"]["target"]))
        absent = f"not in the DVC-tracked {data['dvc']['target']}"
        links = dvc_workspace_escapes(data["dvc"]["repo"], data["dvc"]["target"], follow_links)
        escapes = {relpath: _escape_reason(relpath, links, root) for relpath in versions}
        escapes = {relpath: reason for relpath, reason in escapes.items() if reason}
    elif root.is_dir():
        versions, escapes = table_versions(root, [row.relpath for row in rows], follow_links)
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
        elif row.relpath in escapes:
            reason = escapes[row.relpath]
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
    follow_links = data.get("follow_links", False)  # the workflow's config always has it
    if data["source"] == "table":
        return scan_table(data)
    if data["source"] == "dvc":
        dvc = data["dvc"]
        return scan_dvc(dvc["repo"], dvc["target"], data["extensions"], follow_links)
    return scan_directory(data["dir"], data["extensions"], follow_links)


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


# How many of the files a failed fetch could not get are named in its message.
NAMED_MISSING = 10


def fetch_audio(data: dict, members: list[AudioFile], fetched_path: str | Path) -> dict:
    """Make ``members`` present in the workspace of the DVC source and record which versions
    were fetched.

    Not ``dvc pull``: with some objects missing on the remote, its checkout removed files
    (issue 29, measured by a user: the workspace shrank from 62 files to 0 while other shards
    were being extracted). Instead one ``dvc fetch`` of the shard's files brings their objects
    into the cache (DVC never touches the workspace in a fetch), and the job copies each of its
    own files from the cache into the workspace itself (``dvc_repo.place_file``: atomic, files
    already there unchanged are left alone). A failed fetch places nothing and removes
    nothing; its message names the files and the remote. DVC's state for the repository
    (``site_cache_dir``) is the shard's own, beside ``fetched_path``, and is dropped when the
    fetch fails, so the rerun after the remote is repaired starts from a clean one.
    """
    repo, target = Path(data["dvc"]["repo"]), data["dvc"]["target"]
    fetched_path = Path(fetched_path)
    site_cache = fetched_path.parent / ".dvc-site" / fetched_path.stem
    objects, remote, url = dvc_repo.cache_and_remote(repo, site_cache)
    missing = [a for a in members if not dvc_repo.object_path(objects, a.version).is_file()]
    if missing:
        log.info("dvc fetch of %d of %d files in %s", len(missing), len(members), repo)
        result = dvc_repo.dvc_fetch(repo, [f"{target}/{a.relpath}" for a in missing], site_cache)
        log.info("%s%s", result.stdout, result.stderr)
        absent = [a for a in missing if not dvc_repo.object_path(objects, a.version).is_file()]
        if result.returncode != 0 or absent:
            shutil.rmtree(site_cache, ignore_errors=True)
            raise DataSourceError(_fetch_failure(repo, target, remote, url, result, absent))
    placed = sum(
        dvc_repo.place_file(dvc_repo.object_path(objects, a.version), repo / target / a.relpath)
        for a in members
    )
    log.info("%d files copied from the DVC cache into %s/%s", placed, repo, target)
    fetched = {f"{audio.genre}/{audio.track}": audio.version for audio in members}
    write_json(fetched_path, {"location": str(audio_root(data)), "files": fetched})
    return fetched


def _fetch_failure(repo, target, remote, url, result, absent: list[AudioFile]) -> str:
    named = ", ".join(f"{target}/{a.relpath} (md5 {a.version})" for a in absent[:NAMED_MISSING])
    more = f" and {len(absent) - NAMED_MISSING} more" if len(absent) > NAMED_MISSING else ""
    said = "\n".join(result.stderr.strip().splitlines()[-5:])
    return redact(
        f"`dvc fetch` from the DVC remote {remote!r} ({url}) failed in {repo} "
        f"(exit {result.returncode}): {len(absent)} file(s) of this shard are not in the cache: "
        f"{named}{more}.\nDVC said: {said}\nNothing in the workspace {repo}/{target} was "
        "removed. Put the missing objects back on the remote (`dvc push` from a copy of the "
        "project that has them), or check the remote and its credentials (`dvc remote list`, "
        "`dvc status --cloud`), then run the same snakemake command again: it fetches only "
        f"what is missing.\n{remote_help(repo, result.stderr)}"
    )


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


def _tree_ids(relpath: str, folder: bool) -> tuple[str, str]:
    return UNLABELLED, tree_track_id(relpath)


def _collect_tree(
    entries: list[tuple[str, str]], extensions: list[str], where: str, escapes: dict | None = None
) -> Collection:
    """``(relpath, version)`` pairs -> sorted unlabelled AudioFiles of every file with an audio
    extension, at any depth, and the links leaving the root (``escapes``) as skipped; an error
    for two files with one track id or no audio at all."""
    suffixes = _suffixes(extensions)
    listing = _Listing(where, "relative paths without extension")
    escapes = escapes or {}
    _skip_escapes(listing, escapes, suffixes, where, _tree_ids)
    for relpath, version in sorted(entries):
        if Path(relpath).suffix.lower() in suffixes and not _escaped(relpath, escapes):
            listing.add(UNLABELLED, tree_track_id(relpath), relpath, version)
    if not listing.files:
        raise listing.no_audio(f"({', '.join(sorted(suffixes))}) below {where}")
    return Collection(listing.files, listing.skipped)


def scan_tree(root: str | Path, extensions: list[str], follow_links: bool = False) -> Collection:
    """Every audio file below a plain directory (flat or nested), with ``<size>:<mtime_ns>``;
    links leaving it skipped with the reason (unless ``follow_links``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"audio directory {root} does not exist")
    entries, escapes = walk_files(root, follow_links)
    return _collect_tree(entries, extensions, str(root), escapes)


def list_tree(root: str | Path, extensions: list[str]) -> list[AudioFile]:
    return scan_tree(root, extensions).files


def scan_dvc_tree(
    repo: str | Path, target: str, extensions: list[str], follow_links: bool = False
) -> Collection:
    """Every audio file of a DVC-tracked directory (flat or nested), with DVC's md5s."""
    escapes = dvc_workspace_escapes(repo, target, follow_links)
    return _collect_tree(dvc_entries(repo, target), extensions, f"{repo}/{target}", escapes)


def list_dvc_tree(repo: str | Path, target: str, extensions: list[str]) -> list[AudioFile]:
    return scan_dvc_tree(repo, target, extensions).files


def scan_unlabelled(data: dict, follow_links: bool = False) -> Collection:
    """Every audio file of a ``data``-like section (``source``, ``dir`` or ``dvc``,
    ``extensions``) at any depth, as unlabelled files, and what is skipped (links leaving the
    root, unless ``follow_links``: the workflow passes ``data.follow_links``)."""
    if data["source"] == "dvc":
        dvc = data["dvc"]
        return scan_dvc_tree(dvc["repo"], dvc["target"], data["extensions"], follow_links)
    return scan_tree(data["dir"], data["extensions"], follow_links)


def list_unlabelled(data: dict, follow_links: bool = False) -> list[AudioFile]:
    return scan_unlabelled(data, follow_links).files
