"""Track-level train/val/test splits: seeded stratified holdout, stratified k-fold, or a
predefined table; optionally group-aware (no artist/album in two of train/val/test).

The unit of assignment is a group of tracks (``split.group_by``; without it every track is its
own group). A fold is one complete assignment of tracks to train/val/test; holdout and ``file``
have one fold, ``kfold`` has K, whose test sets partition the tracks.

Small genres: a holdout puts at least one track (group) of every genre in each of train, val and
test, so a genre needs at least 3; k folds test each genre in every fold, so a genre needs at
least K. A genre with fewer is left out of the split (a warning names it, its count and what it
needs; the split summary lists it under ``excluded_genres``) rather than silently trained on
and never tested. Fewer than two genres left is an error. A ``file`` split is the user's own
table and is kept as given (genres missing from a split are only warned about).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from genre_classification.columns import SPLIT_COLUMNS
from genre_classification.data.audio_source import READABLE_EXTENSIONS
from genre_classification.fileio import read_tsv, write_json, write_tsv

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# The column of split.tsv / fold tables holding a track's group (when split.group_by is set).
GROUP_COLUMN = "group"


class SplitError(ValueError):
    """The split configuration or a split/group table does not fit the collection."""


def assign_splits(tracks: list[dict], fractions: dict[str, float], seed: int) -> list[dict]:
    """Return the rows of ``tracks`` (dicts with ``genre`` and ``track``) with a ``split`` key.

    Within each genre the tracks are shuffled with a seed derived from ``seed`` and the genre, so
    adding a genre does not reshuffle the others; every genre with at least three tracks gets at
    least one track in each split.
    """
    total = sum(fractions[name] for name in SPLITS)
    by_genre: dict[str, list[dict]] = {}
    for row in sorted(tracks, key=lambda r: (r["genre"], r["track"])):
        by_genre.setdefault(row["genre"], []).append(row)
    result = []
    for genre, rows in sorted(by_genre.items()):
        genre_seed = [seed, *genre.encode()]
        order = np.random.default_rng(genre_seed).permutation(len(rows))
        n = len(rows)
        n_test = round(n * fractions["test"] / total)
        n_val = round(n * fractions["val"] / total)
        if n >= 3:
            n_test, n_val = max(n_test, 1), max(n_val, 1)
        for rank, index in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            result.append({**rows[index], "split": split})
    return sorted(result, key=lambda r: (r["genre"], r["track"]))


# --- genres too small to split ---------------------------------------------------------------


MIN_HOLDOUT_UNITS = len(SPLITS)  # one track (group) in each of train, val and test


@dataclasses.dataclass
class ExcludedGenre:
    """A genre left out of the split: ``n_tracks`` tracks in ``n_units`` units (tracks, or
    groups with ``split.group_by``) where the split needs ``needs`` (``requirement`` says why)."""

    genre: str
    n_tracks: int
    n_units: int
    needs: int
    requirement: str
    group_by: str | None = None

    def message(self) -> str:
        tracks = f"{self.n_tracks} track{'' if self.n_tracks == 1 else 's'}"
        groups = f" in {self.n_units} {self.group_by} group(s)" if self.group_by else ""
        return f"genre {self.genre!r} has {tracks}{groups}; {self.requirement}"


def split_requirement(method: str, folds: int, group_by: str | None) -> tuple[int, str]:
    """The number of tracks (groups) a genre needs for ``method`` and a sentence saying why."""
    units = f"{group_by} groups" if group_by else "tracks"
    if method == "kfold":
        return folds, (
            f"{folds} folds need at least {folds} {units} per genre (one in the test set of "
            "every fold)"
        )
    return MIN_HOLDOUT_UNITS, (
        f"a holdout split needs at least {MIN_HOLDOUT_UNITS} {units} per genre (one in each of "
        "train, val and test)"
    )


def exclude_small_genres(
    tracks: list[dict],
    needs: int,
    requirement: str,
    groups: dict[str, str] | None = None,
    group_by: str | None = None,
) -> tuple[list[dict], list[ExcludedGenre]]:
    """Leave out the tracks of every genre with fewer than ``needs`` units (tracks, or distinct
    groups of its tracks with ``groups``), warning for each; ``SplitError`` if fewer than two
    genres remain. Returns ``(kept tracks, excluded genres)``."""
    by_genre: dict[str, list[dict]] = {}
    for row in tracks:
        by_genre.setdefault(row["genre"], []).append(row)
    excluded = []
    for genre, rows in sorted(by_genre.items()):
        n_units = len({groups[track_key(r)] for r in rows}) if groups else len(rows)
        if n_units < needs:
            excluded.append(ExcludedGenre(genre, len(rows), n_units, needs, requirement, group_by))
            log.warning("%s: left out of the split", excluded[-1].message())
    kept = sorted(set(by_genre) - {e.genre for e in excluded})
    if len(kept) < 2:
        counts = ", ".join(f"{g} {len(rows)}" for g, rows in sorted(by_genre.items()))
        raise SplitError(
            f"{len(kept)} genre(s) left to split ({', '.join(kept) or 'none'}), at least 2 are "
            f"needed; {requirement}. Tracks per genre: {counts or 'none'}"
        )
    dropped = {e.genre for e in excluded}
    return [r for r in tracks if r["genre"] not in dropped], excluded


def genres_missing_from_splits(rows: list[dict]) -> dict[str, list[str]]:
    """Split name -> the genres of ``rows`` that have no track in it (e.g. a ``file`` table, or
    groups too few or too large for the fractions)."""
    genres = {r["genre"] for r in rows}
    present = {s: {r["genre"] for r in rows if r["split"] == s} for s in SPLITS}
    return {s: sorted(genres - present[s]) for s in SPLITS if genres - present[s]}


# --- group-aware assignment -------------------------------------------------------------------


def track_key(row: dict) -> str:
    return f"{row['genre']}/{row['track']}"


def _units(tracks: list[dict], groups: dict[str, str] | None) -> dict[str, list[dict]]:
    """Tracks by group (``groups``: track key -> group); each track alone without groups."""
    units: dict[str, list[dict]] = {}
    for row in tracks:
        key = track_key(row)
        units.setdefault(groups[key] if groups else key, []).append(row)
    return units


def assign_bins(
    units: dict[str, list[dict]], weights: list[float], seed: int | list[int]
) -> dict[str, int]:
    """Assign every unit (a group of tracks) to one of ``len(weights)`` bins, each bin getting
    about its weight's share of every genre.

    Greedy, largest units first (ties in a seeded random order): a unit goes to the bin where it
    least increases the squared deviation from the per-genre targets (relative to the genre's
    size), ties to the bin least full for its weight. Units of one track each give per-genre
    counts within one of their targets.
    """
    weights = np.asarray(weights, dtype=float) / sum(weights)
    genres = sorted({row["genre"] for rows in units.values() for row in rows})
    g_index = {g: i for i, g in enumerate(genres)}
    counts = {u: Counter(g_index[row["genre"]] for row in rows) for u, rows in units.items()}
    totals = np.zeros(len(genres))
    for c in counts.values():
        for g, n in c.items():
            totals[g] += n
    targets = weights[:, None] * totals[None, :]
    filled = np.zeros_like(targets)
    rng = np.random.default_rng(seed)
    names = sorted(units)
    order = [names[i] for i in rng.permutation(len(names))]
    order.sort(key=lambda u: -len(units[u]))  # stable: ties keep the random order
    result = {}
    for unit in order:
        g = np.fromiter(counts[unit].keys(), dtype=int)
        n = np.fromiter(counts[unit].values(), dtype=float)
        before = filled[:, g] - targets[:, g]
        cost = (((before + n) ** 2 - before**2) / totals[g]).sum(axis=1)
        fullness = filled.sum(axis=1) / np.maximum(weights, 1e-12)
        best = min(range(len(weights)), key=lambda b: (round(cost[b], 9), fullness[b]))
        filled[best, g] += n
        result[unit] = best
    return result


def _with_split(rows: list[dict], split: str) -> list[dict]:
    return [{**row, "split": split} for row in rows]


def holdout_split(
    tracks: list[dict], fractions: dict[str, float], seed: int, groups: dict[str, str] | None
) -> list[dict]:
    """Today's per-genre holdout (``assign_splits``), or group-aware when ``groups`` is given."""
    if not groups:
        return assign_splits(tracks, fractions, seed)
    units = _units(tracks, groups)
    bins = assign_bins(units, [fractions[s] for s in SPLITS], [seed, 0])
    rows = [r for unit, b in bins.items() for r in _with_split(units[unit], SPLITS[b])]
    return sorted(rows, key=track_key)


def kfold_splits(
    tracks: list[dict],
    k: int,
    fractions: dict[str, float],
    seed: int,
    groups: dict[str, str] | None = None,
) -> list[list[dict]]:
    """K folds: fold i tests on the i-th stratified (group-aware) part of the tracks and draws its
    validation tracks (share val / (train + val), seeded, stratified) from the other parts."""
    if k < 2:
        raise SplitError(f"split.folds must be at least 2, not {k}")
    units = _units(tracks, groups)
    if len(units) < k:
        raise SplitError(f"{len(units)} tracks/groups cannot make {k} folds")
    test_fold = assign_bins(units, [1.0] * k, [seed, 0])
    folds = []
    for i in range(k):
        rest = {u: rows for u, rows in units.items() if test_fold[u] != i}
        val = assign_bins(rest, [fractions["train"], fractions["val"]], [seed, i + 1])
        rows = []
        for unit, unit_rows in units.items():
            split = "test" if test_fold[unit] == i else ("train", "val")[val[unit]]
            rows += [{**row, "split": split, "fold": test_fold[unit]} for row in unit_rows]
        folds.append(sorted(rows, key=track_key))
    return folds


# --- predefined splits and group tables -------------------------------------------------------


def name_key(name: str) -> str:
    """``blues/blues.00000.au``, ``/data/genres/blues/blues.00000.wav`` or ``blues/blues.00000``
    -> ``blues/blues.00000``; a bare ``blues.00000`` stays bare (matched by track name)."""
    name = name.strip()
    stem, dot, extension = name.rpartition(".")
    if dot and extension.lower() in READABLE_EXTENSIONS:
        name = stem
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:])


def read_table(path: str | Path) -> list[dict]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def match_tracks(
    names: list[str], tracks: list[dict], rejected: list[dict], what: str
) -> list[str | None]:
    """The track key of each name (``None``: a quarantined file); a clear error for names that
    are not in the collection or that match several tracks."""
    keys = {track_key(r) for r in tracks}
    by_name: dict[str, list[str]] = {}
    for row in tracks:
        by_name.setdefault(row["track"], []).append(track_key(row))
    quarantined = {track_key(r) for r in rejected}
    quarantined |= {r["track"] for r in rejected}
    result, unknown, ambiguous = [], [], []
    for name in names:
        key = name_key(name)
        if key in keys:
            result.append(key)
        elif "/" not in key and len(by_name.get(key, [])) == 1:
            result.append(by_name[key][0])
        elif key in quarantined:
            result.append(None)
        elif len(by_name.get(key, [])) > 1:
            ambiguous.append(name)
        else:
            unknown.append(name)
    problems = []
    if unknown:
        problems.append(
            f"{len(unknown)} tracks that are not in the collection: {', '.join(unknown[:10])}"
            + (" ..." if len(unknown) > 10 else "")
        )
    if ambiguous:
        problems.append(f"track names of several genres (give genre/track): {ambiguous[:10]}")
    if problems:
        raise SplitError(f"{what} names " + "; ".join(problems))
    return result


def _name_column(table: list[dict], path) -> str:
    for column in ("track", "path"):
        if table and column in table[0]:
            return column
    raise SplitError(f"{path}: needs a 'track' or 'path' column")


def read_groups(
    path: str | Path, column: str, tracks: list[dict], rejected: list[dict] = ()
) -> dict[str, str]:
    """Track key -> group from a TSV with a ``track`` (or ``path``) column and ``column``."""
    table = read_table(path)
    if table and column not in table[0]:
        raise SplitError(f"{path}: no column {column!r} (split.group_by)")
    keys = match_tracks([r[_name_column(table, path)] for r in table], tracks, rejected, str(path))
    return {key: row[column] for key, row in zip(keys, table, strict=True) if key is not None}


def check_groups(tracks: list[dict], groups: dict[str, str], column: str) -> None:
    missing = [track_key(r) for r in tracks if not groups.get(track_key(r))]
    if missing:
        raise SplitError(
            f"{len(missing)} tracks have no {column!r} group, e.g. {', '.join(missing[:5])}"
        )


def file_split(
    path: str | Path,
    tracks: list[dict],
    rejected: list[dict] = (),
    group_column: str | None = None,
) -> tuple[list[dict], list[str], dict[str, str] | None]:
    """The predefined assignment of ``path`` (a ``track``/``path`` column and ``split``).

    Returns ``(rows, left_out, groups)``: the assigned tracks, the keys of collection tracks the
    table does not mention, and the groups of its ``group_column`` if it has one.
    """
    table = read_table(path)
    check_split_column(table, path)
    keys = match_tracks([r[_name_column(table, path)] for r in table], tracks, rejected, str(path))
    by_key = {track_key(r): r for r in tracks}
    assigned: dict[str, str] = {}
    for key, row in zip(keys, table, strict=True):
        if key is None:
            continue
        if assigned.setdefault(key, row["split"]) != row["split"]:
            raise SplitError(f"{path}: {key} is in both {assigned[key]} and {row['split']}")
    groups = None
    if group_column and table and group_column in table[0]:
        groups = {k: r[group_column] for k, r in zip(keys, table, strict=True) if k is not None}
    rows = [{**by_key[k], "split": s} for k, s in assigned.items()]
    left_out = sorted(set(by_key) - set(assigned))
    return sorted(rows, key=track_key), left_out, groups


def check_split_column(table: list[dict], where) -> None:
    if not table or "split" not in table[0]:
        raise SplitError(f"{where}: needs a 'split' column (train/val/test)")
    bad = sorted({r["split"] for r in table} - set(SPLITS))
    if bad:
        raise SplitError(f"{where}: unknown split names {bad} (want train, val, test)")


def column_split(tracks: list[dict], where: str) -> tuple[list[dict], list[str]]:
    """The assignment in the tracks' own ``split`` column (a label-table source): ``(rows,
    left_out)``, tracks with an empty split left out."""
    rows = [r for r in tracks if r.get("split")]
    check_split_column(rows or tracks, where)
    return sorted(rows, key=track_key), sorted(track_key(r) for r in tracks if not r["split"])


def groups_crossing(rows: list[dict], groups: dict[str, str]) -> dict[str, set[str]]:
    """Groups whose tracks are in more than one split of ``rows``."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        seen.setdefault(groups[track_key(row)], set()).add(row["split"])
    return {g: s for g, s in seen.items() if len(s) > 1}


# --- the split_tracks job ---------------------------------------------------------------------


@dataclasses.dataclass
class SplitResult:
    folds: list[list[dict]]
    groups: dict[str, str] | None = None
    left_out: list[str] = dataclasses.field(default_factory=list)
    excluded: list[ExcludedGenre] = dataclasses.field(default_factory=list)


def make_split(
    tracks: list[dict],
    method: str = "holdout",
    fractions: dict[str, float] | None = None,
    seed: int = 42,
    folds: int = 5,
    split_file: str | Path | None = None,
    group_by: str | None = None,
    groups_file: str | Path | None = None,
    rejected: list[dict] = (),
) -> SplitResult:
    """Assign ``tracks`` (manifest rows) according to the ``split`` config section.

    Groups (``group_by``) come from a column of the tracks themselves (a label-table source),
    else from ``groups_file``, else from the ``file`` split table. ``method`` file without a
    ``split_file``: the tracks' own ``split`` column (a label-table source).
    """
    groups = None
    if group_by:
        if tracks and group_by in tracks[0]:
            groups = {track_key(r): r[group_by] for r in tracks}
        elif groups_file:
            groups = read_groups(groups_file, group_by, tracks, rejected)
    if method == "file":
        if split_file is None:
            where = "the label table (data.table.path)"
            rows, left_out = column_split(tracks, where)
        else:
            where = split_file
            rows, left_out, table_groups = file_split(split_file, tracks, rejected, group_by)
            groups = groups or table_groups
        if group_by and groups is None:
            raise SplitError(f"split.group_by {group_by!r}: no such column in {where}")
        if groups:
            check_groups(rows, groups, group_by)
            crossing = groups_crossing(rows, groups)
            if crossing:
                example = ", ".join(f"{g} ({'/'.join(sorted(s))})" for g, s in crossing.items())
                raise SplitError(f"{where}: {group_by} groups in several splits: {example}")
        return SplitResult([rows], groups, left_out)
    if group_by and groups is None:
        raise SplitError(
            f"split.group_by {group_by!r}: the tracks have no such column; give split.groups"
        )
    if groups:
        check_groups(tracks, groups, group_by)
    if method not in ("holdout", "kfold"):
        raise SplitError(f"unknown split.method {method!r}")
    needs, requirement = split_requirement(method, folds, group_by)
    tracks, excluded = exclude_small_genres(tracks, needs, requirement, groups, group_by)
    if method == "holdout":
        rows = [holdout_split(tracks, fractions, seed, groups)]
    else:
        rows = kfold_splits(tracks, folds, fractions, seed, groups)
    return SplitResult(rows, groups, excluded=excluded)


def _columns(rows: list[dict], groups) -> tuple[str, ...]:
    extra = ("fold",) if rows and "fold" in rows[0] else ()
    return SPLIT_COLUMNS + extra + ((GROUP_COLUMN,) if groups else ())


def split_summary(result: SplitResult, method: str) -> dict:
    def counts(rows):
        return {s: sum(r["split"] == s for r in rows) for s in SPLITS}

    return {
        "method": method,
        "n_tracks": len(result.folds[0]),
        "n_groups": len(set(result.groups.values())) if result.groups else None,
        "folds": [counts(rows) for rows in result.folds],
        "n_left_out": len(result.left_out),
        "left_out": result.left_out,
        "excluded_genres": [
            {
                "genre": e.genre,
                "n_tracks": e.n_tracks,
                "n_units": e.n_units,
                "needs": e.needs,
                "reason": e.message(),
            }
            for e in result.excluded
        ],
        "genres_missing": [genres_missing_from_splits(rows) for rows in result.folds],
    }


def write_split(
    manifest_path: str | Path,
    split_path: str | Path,
    fractions: dict[str, float],
    seed: int,
    fold_paths: list[str | Path] = (),
    info_path: str | Path | None = None,
    rejected_path: str | Path | None = None,
    **options,
) -> SplitResult:
    """Split the tracks of the manifest and write ``split.tsv``, one table per fold (k-fold) and
    a summary JSON (``info_path``: counts, left-out tracks). ``options``: ``make_split``'s.

    With k folds ``split.tsv`` holds fold 0's assignment plus each track's test ``fold``.
    """
    rows = [{**row, "source_md5": row["md5"]} for row in read_tsv(manifest_path)]
    result = make_split(
        rows, fractions=fractions, seed=seed, rejected=read_tsv(rejected_path), **options
    )
    fold_tables = result.folds if len(result.folds) > 1 else []
    if len(fold_paths) != len(fold_tables):
        raise SplitError(f"{len(result.folds)} folds but {len(fold_paths)} fold tables to write")
    if result.groups:
        for fold in result.folds:
            for row in fold:
                row[GROUP_COLUMN] = result.groups[track_key(row)]
    for path, fold in zip(fold_paths, fold_tables, strict=True):
        write_tsv(path, fold, SPLIT_COLUMNS + ((GROUP_COLUMN,) if result.groups else ()))
    write_tsv(split_path, result.folds[0], _columns(result.folds[0], result.groups))
    summary = split_summary(result, options.get("method", "holdout"))
    if info_path:
        write_json(info_path, summary)
    for i, fold in enumerate(summary["folds"]):
        log.info("fold %d: %s (seed %d)", i, fold, seed)
        for split, genres in summary["genres_missing"][i].items():
            log.warning("fold %d: no %s tracks of genres %s", i, split, ", ".join(genres))
    if result.left_out:
        log.warning(
            "%d tracks of the collection are not in the split table and are left out: %s",
            len(result.left_out),
            ", ".join(result.left_out[:20]) + (" ..." if len(result.left_out) > 20 else ""),
        )
    return result
