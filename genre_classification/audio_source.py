"""Where the audio comes from: a DVC-tracked directory (``dvc pull``) or a plain directory.

Both give GTZAN's layout, ``<root>/<genre>/<file>``. The result is a manifest of usable files with
their content md5 (the per-file data version that decides what is re-extracted), a list of
quarantined files with the reason, and the data version of the whole set.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from genre_classification.dvc_repo import dvc_executable
from genre_classification.features import duration_problem

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("genre", "track", "path", "md5", "size_bytes", "duration_s")
REJECTED_COLUMNS = ("genre", "track", "path", "reason")


class DataSourceError(RuntimeError):
    """The configured audio source cannot be read; the message says which key or file to fix."""


@dataclass(frozen=True)
class AudioFile:
    genre: str
    track: str
    path: Path


def audio_root(data: dict) -> Path:
    """The ``<genre>/<file>`` directory named by the ``data`` config section."""
    if data["source"] == "dvc":
        return Path(data["dvc"]["repo"]) / data["dvc"]["target"]
    return Path(data["dir"])


def list_audio_files(root: Path, extensions: list[str]) -> list[AudioFile]:
    if not root.is_dir():
        raise DataSourceError(
            f"audio directory {root} does not exist: set data.dir (source: dir) or "
            "data.dvc.repo/data.dvc.target (source: dvc) in the config"
        )
    suffixes = {f".{ext.lower().lstrip('.')}" for ext in extensions}
    files, seen = [], {}
    for path in sorted(root.glob("*/*")):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        key = (path.parent.name, path.stem)
        if key in seen:
            raise DataSourceError(
                f"two audio files give the same track id {key[0]}/{key[1]}: {seen[key]} and "
                f"{path}; rename one (track ids are file names without extension)"
            )
        seen[key] = path
        files.append(AudioFile(genre=path.parent.name, track=path.stem, path=path))
    if not files:
        raise DataSourceError(
            f"no audio files ({', '.join(sorted(suffixes))}) found as {root}/<genre>/<file>"
        )
    return files


def file_md5(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def directory_fingerprint(root: str | Path, extensions: list[str]) -> str:
    """Cheap stat-based fingerprint (names, sizes, mtimes) that changes when the directory does.

    Used as a Snakemake ``params`` value so the fetch step reruns after files change, while
    content md5s (computed by that step) decide which files are re-extracted.
    """
    root = Path(root)
    if not root.is_dir():
        return "missing"
    digest = hashlib.md5()
    for audio in list_audio_files(root, extensions):
        stat = audio.path.stat()
        digest.update(f"{audio.path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def dvc_out(repo: Path, target: str) -> dict:
    """The ``outs`` entry of ``<repo>/<target>.dvc`` (md5 of the directory, file count)."""
    dvc_file = repo / f"{target}.dvc"
    if not dvc_file.is_file():
        raise DataSourceError(
            f"{dvc_file} not found: data.dvc.repo must be a DVC project and data.dvc.target a "
            "directory tracked with `dvc add` (run `make demo-data` for the demo data)"
        )
    return yaml.safe_load(dvc_file.read_text())["outs"][0]


def dvc_pull(repo: Path, target: str) -> None:
    command = [dvc_executable(), "pull", f"{target}.dvc"]
    log.info("running %s in %s", " ".join(command), repo)
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    log.info("%s%s", result.stdout, result.stderr)
    if result.returncode != 0:
        raise DataSourceError(
            f"`dvc pull {target}.dvc` failed in {repo} (exit {result.returncode}):\n"
            f"{result.stderr.strip()}\nCheck the DVC remote (`dvc remote list`, credentials) or "
            "use a plain directory with `data: {source: dir, dir: ...}`."
        )


def dvc_file_md5s(repo: Path, out: dict) -> dict[str, str]:
    """Per-file md5s from DVC's ``.dir`` listing in the cache; empty if not found."""
    dir_md5 = out["md5"].removesuffix(".dir")
    command = [dvc_executable(), "cache", "dir"]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    cache = Path(result.stdout.strip()) if result.returncode == 0 else repo / ".dvc" / "cache"
    for listing in (
        cache / "files" / "md5" / dir_md5[:2] / f"{dir_md5[2:]}.dir",
        cache / dir_md5[:2] / f"{dir_md5[2:]}.dir",
    ):
        if listing.is_file():
            return {entry["relpath"]: entry["md5"] for entry in json.loads(listing.read_text())}
    return {}


def probe_audio(path: Path) -> dict:
    """Decode the whole file once at its native rate; record the error or the sample count."""
    if path.stat().st_size == 0:
        return {"decode_error": "empty: file has 0 bytes", "n_samples": 0, "sample_rate": 0}
    import soundfile as sf

    try:
        info = sf.info(path)
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        n_samples = audio.shape[0] if info.frames else 0
    except Exception:  # formats libsndfile lacks: fall back to librosa's decoders
        import librosa

        try:
            audio, rate = librosa.load(path, sr=None, mono=True)
            n_samples = audio.shape[0]
        except Exception as error:
            reason = f"cannot decode: {type(error).__name__}: {error}".replace("\n", " ")
            return {"decode_error": reason, "n_samples": 0, "sample_rate": 0}
    return {"decode_error": "", "n_samples": n_samples, "sample_rate": rate}


def read_tsv(path: str | Path | None) -> list[dict]:
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def write_tsv(path: str | Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: row[key] for key in columns} for row in rows)


SCREEN_COLUMNS = ("md5", "decode_error", "n_samples", "sample_rate")


def screen_files(
    files: list[AudioFile],
    md5s: dict[Path, str],
    segment_seconds: float,
    screened: dict[str, dict],
) -> tuple[list[dict], list[dict]]:
    """Split files into accepted manifest rows and rejected rows (with the reason).

    ``screened`` maps md5 -> probe result; files already in it are not decoded again, new
    results are added to it.
    """
    accepted, rejected = [], []
    for audio in files:
        md5 = md5s[audio.path]
        if md5 not in screened:
            screened[md5] = {"md5": md5, **probe_audio(audio.path)}
        probe = screened[md5]
        n_samples, rate = int(probe["n_samples"]), int(probe["sample_rate"])
        reason = probe["decode_error"] or duration_problem(n_samples, rate, segment_seconds)
        row = {"genre": audio.genre, "track": audio.track, "path": str(audio.path), "md5": md5}
        if reason:
            log.warning("quarantined %s: %s", audio.path, reason)
            rejected.append({**row, "reason": reason})
        else:
            accepted.append(
                {
                    **row,
                    "size_bytes": audio.path.stat().st_size,
                    "duration_s": f"{n_samples / rate:.3f}",
                }
            )
    return accepted, rejected


def fetch_audio(
    data: dict,
    segment_seconds: float,
    manifest_path: str | Path,
    rejected_path: str | Path,
    version_path: str | Path,
    screen_cache_path: str | Path | None = None,
) -> dict:
    """Make the audio present (``dvc pull``) and write manifest, rejected list and data version.

    ``screen_cache_path`` keeps earlier decode checks by md5 (it is not a Snakemake output, so it
    survives the rerun of this step after new data arrives).
    """
    root = audio_root(data)
    if data["source"] == "dvc":
        repo, target = Path(data["dvc"]["repo"]), data["dvc"]["target"]
        out = dvc_out(repo, target)
        dvc_pull(repo, target)
        dvc_md5s = dvc_file_md5s(repo, out)
    else:
        dvc_md5s = {}
    files = list_audio_files(root, data["extensions"])
    md5s = {}
    for audio in files:
        relpath = audio.path.relative_to(root).as_posix()
        md5s[audio.path] = dvc_md5s.get(relpath) or file_md5(audio.path)
    screened = {row["md5"]: row for row in read_tsv(screen_cache_path)} if screen_cache_path else {}
    accepted, rejected = screen_files(files, md5s, segment_seconds, screened)
    if screen_cache_path:
        write_tsv(screen_cache_path, list(screened.values()), SCREEN_COLUMNS)
    write_tsv(manifest_path, accepted, MANIFEST_COLUMNS)
    write_tsv(rejected_path, rejected, REJECTED_COLUMNS)

    if data["source"] == "dvc":
        version = {"source": "dvc", "md5": out["md5"], "location": str(root)}
    else:
        listing = "".join(f"{a.path.relative_to(root).as_posix()}\t{md5s[a.path]}\n" for a in files)
        version = {
            "source": "dir",
            "md5": hashlib.md5(listing.encode()).hexdigest(),
            "location": str(root),
        }
    version.update(n_files=len(files), n_accepted=len(accepted), n_rejected=len(rejected))
    Path(version_path).write_text(json.dumps(version, indent=2) + "\n")
    log.info(
        "data version %s: %d files, %d accepted, %d quarantined (see %s)",
        version["md5"],
        len(files),
        len(accepted),
        len(rejected),
        rejected_path,
    )
    return version
