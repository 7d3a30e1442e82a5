"""Track-level stratified split and the demo data generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from genre_classification.data.audio_source import READABLE_EXTENSIONS
from genre_classification.data.demo_data import GENRES, synthesize_clip
from genre_classification.data.split import assign_splits

REPO = Path(__file__).resolve().parents[1]
FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def tracks(genres: dict[str, int]) -> list[dict]:
    return [{"genre": g, "track": f"{g}.{i:05d}"} for g, n in genres.items() for i in range(n)]


def test_stratified_seeded_and_complete():
    rows = tracks({"jazz": 20, "metal": 20, "pop": 7})
    split = assign_splits(rows, FRACTIONS, seed=1)
    assert len(split) == len(rows)
    assert {(r["genre"], r["track"]) for r in split} == {(r["genre"], r["track"]) for r in rows}
    for genre, n_test in (("jazz", 3), ("metal", 3), ("pop", 1)):
        chosen = [r["split"] for r in split if r["genre"] == genre]
        assert chosen.count("test") == n_test and chosen.count("val") == n_test
    assert split == assign_splits(list(reversed(rows)), FRACTIONS, seed=1)
    assert split != assign_splits(rows, FRACTIONS, seed=2)


def test_adding_a_genre_keeps_the_other_assignments():
    before = assign_splits(tracks({"jazz": 10}), FRACTIONS, seed=3)
    after = assign_splits(tracks({"jazz": 10, "rock": 10}), FRACTIONS, seed=3)
    assert [r for r in after if r["genre"] == "jazz"] == before


@pytest.mark.parametrize("genre", sorted(GENRES))
def test_demo_clips_are_deterministic_and_bounded(genre):
    a = synthesize_clip(genre, 2.0, 22050, seed=5)
    assert a.shape == (44100,) and a.dtype == np.float32
    assert 0.4 < np.abs(a).max() <= 0.9
    np.testing.assert_array_equal(a, synthesize_clip(genre, 2.0, 22050, seed=5))
    assert not np.array_equal(a, synthesize_clip(genre, 2.0, 22050, seed=6))


def test_demo_genres_differ_in_tempo_and_brightness():
    import librosa

    def tempo_and_centroid(genre):
        clip = synthesize_clip(genre, 8.0, 22050, seed=0)
        tempo = librosa.feature.tempo(y=clip, sr=22050)[0]
        return tempo, librosa.feature.spectral_centroid(y=clip, sr=22050).mean()

    metal_tempo, metal_centroid = tempo_and_centroid("metal")
    classical_tempo, classical_centroid = tempo_and_centroid("classical")
    assert metal_centroid > 2 * classical_centroid
    assert tempo_and_centroid("disco")[0] > tempo_and_centroid("reggae")[0]


# --- k-fold, groups, predefined tables --------------------------------------------------------

import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
from collections import Counter  # noqa: E402

from genre_classification.data.split import (  # noqa: E402
    SplitError,
    holdout_split,
    kfold_splits,
    make_split,
    split_summary,
    track_key,
    write_split,
)


def random_label_table(rng: random.Random) -> tuple[list[dict], dict[str, str]]:
    """Tracks of 2-5 genres with 1-30 tracks each, in groups of random sizes; a group (artist)
    mostly stays in one genre but sometimes has tracks of another."""
    genres = [f"g{i}" for i in range(rng.randint(2, 5))]
    rows, groups = [], {}
    for genre in genres:
        n, i = rng.randint(6, 30), 0
        while i < n:
            size = rng.choice([1, 1, 2, 3, 5, 8])
            artist = f"{genre}-a{i}" if rng.random() > 0.1 else f"shared{rng.randint(0, 3)}"
            for _ in range(min(size, n - i)):
                row = {"genre": genre, "track": f"{genre}.{i:05d}"}
                rows.append(row)
                groups[track_key(row)] = artist
                i += 1
    return rows, groups


def split_of_groups(rows: list[dict], groups: dict[str, str]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for row in rows:
        seen.setdefault(groups[track_key(row)], set()).add(row["split"])
    return seen


def test_no_group_crosses_splits_over_random_label_tables():
    for case in range(40):
        rng = random.Random(case)
        rows, groups = random_label_table(rng)
        holdout = holdout_split(rows, FRACTIONS, seed=case, groups=groups)
        assert sorted(map(track_key, holdout)) == sorted(map(track_key, rows))
        assert all(len(s) == 1 for s in split_of_groups(holdout, groups).values()), case
        k = rng.randint(2, 5)
        folds = kfold_splits(rows, k, FRACTIONS, seed=case, groups=groups)
        tested = Counter(track_key(r) for fold in folds for r in fold if r["split"] == "test")
        assert tested == Counter(map(track_key, rows)), case  # test sets partition the tracks
        for fold in folds:
            assert all(len(s) == 1 for s in split_of_groups(fold, groups).values()), case


def test_kfold_partitions_tracks_and_is_stratified():
    rows = tracks({"jazz": 23, "metal": 20, "pop": 7})
    folds = kfold_splits(rows, 5, FRACTIONS, seed=3)
    assert len(folds) == 5
    test_sets = [{track_key(r) for r in fold if r["split"] == "test"} for fold in folds]
    for a, b in itertools.combinations(test_sets, 2):
        assert not a & b
    assert set().union(*test_sets) == {track_key(r) for r in rows}
    for genre, n in (("jazz", 23), ("metal", 20), ("pop", 7)):
        per_fold = [sum(t.startswith(genre) for t in s) for s in test_sets]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n, (genre, per_fold)
    for i, fold in enumerate(folds):
        counts = Counter((r["genre"], r["split"]) for r in fold)
        # val: 0.15 / 0.85 of the 80% not tested, at least one per genre
        assert counts["jazz", "val"] in (3, 4) and counts["pop", "val"] == 1, counts
        assert all(r["fold"] == i for r in fold if r["split"] == "test")
    assert folds == kfold_splits(list(reversed(rows)), 5, FRACTIONS, seed=3)
    assert folds != kfold_splits(rows, 5, FRACTIONS, seed=4)


def test_grouped_holdout_stays_close_to_the_fractions():
    rows = tracks({"jazz": 60, "metal": 60})
    groups = {track_key(r): f"{r['genre']}-{i // 3}" for i, r in enumerate(rows)}
    split = holdout_split(rows, FRACTIONS, seed=1, groups=groups)
    counts = Counter((r["genre"], r["split"]) for r in split)
    for genre in ("jazz", "metal"):
        assert counts[genre, "test"] == 9 and counts[genre, "val"] == 9, counts


def test_file_split_reproduces_its_table(tmp_path):
    rows = tracks({"blues": 4, "rock": 4})
    table = tmp_path / "split.tsv"
    lines = ["path\tsplit"]
    expected = {}
    for i, row in enumerate(rows[:-2]):  # the last two tracks are not named: left out
        split = ("train", "val", "test")[i % 3]
        expected[track_key(row)] = split
        lines.append(f"/data/genres/{row['genre']}/{row['track']}.au\t{split}")
    table.write_text("\n".join(lines) + "\n")
    result = make_split(rows, method="file", split_file=table)
    assert {track_key(r): r["split"] for r in result.folds[0]} == expected
    assert result.left_out == ["rock/rock.00002", "rock/rock.00003"]


def test_file_split_names_unknown_tracks_and_skips_quarantined(tmp_path):
    rows = tracks({"blues": 2})
    table = tmp_path / "split.tsv"
    table.write_text(
        "track\tsplit\nblues/blues.00000\ttrain\nblues.00001\ttest\n"
        "blues/broken\ttest\njazz/jazz.00042\ttrain\nnope\tval\n"
    )
    with pytest.raises(SplitError, match=r"names 3 tracks that are not in the collection: "
                       r"blues/broken, jazz/jazz.00042, nope"):  # fmt: skip
        make_split(rows, method="file", split_file=table)
    rejected = [{"genre": "blues", "track": "broken"}, {"genre": "jazz", "track": "jazz.00042"}]
    table.write_text("track\tsplit\nblues/blues.00000\ttrain\nblues/broken\ttest\n")
    result = make_split(rows, method="file", split_file=table, rejected=rejected)
    assert [r["split"] for r in result.folds[0]] == ["train"]
    assert result.left_out == ["blues/blues.00001"]


def test_file_split_with_groups_rejects_a_group_in_two_splits(tmp_path):
    rows = tracks({"blues": 3})
    table = tmp_path / "split.tsv"
    table.write_text(
        "track\tsplit\tartist\nblues.00000\ttrain\tA\nblues.00001\ttest\tA\nblues.00002\tval\tB\n"
    )
    with pytest.raises(SplitError, match=r"artist groups in several splits: A \(test/train\)"):
        make_split(rows, method="file", split_file=table, group_by="artist")


def test_groups_table_must_cover_every_track(tmp_path):
    rows = tracks({"blues": 3})
    groups = tmp_path / "artists.tsv"
    groups.write_text("track\tartist\nblues/blues.00000\tA\nblues/blues.00001\tB\n")
    with pytest.raises(
        SplitError, match=r"1 tracks have no 'artist' group, e.g. blues/blues.00002"
    ):
        make_split(rows, "kfold", FRACTIONS, folds=2, group_by="artist", groups_file=groups)
    with pytest.raises(SplitError, match="give split.groups"):
        make_split(rows, "kfold", FRACTIONS, folds=2, group_by="artist")
    # A label-table source (data.source: table) supplies the column on the tracks themselves.
    own = [{**r, "artist": r["track"][-1]} for r in rows + tracks({"rock": 3})]
    assert make_split(own, "holdout", FRACTIONS, group_by="artist").groups == {
        f"{genre}/{genre}.0000{i}": str(i) for genre in ("blues", "rock") for i in range(3)
    }


def test_file_method_without_a_file_uses_the_label_tables_split_column():
    rows = [{**r, "split": s, "group": g} for r, s, g in zip(
        tracks({"pop": 4}), ["train", "test", "", "train"], "AB-A", strict=True)]  # fmt: skip
    result = make_split(rows, "file", group_by="group")
    assert {track_key(r): r["split"] for r in result.folds[0]} == {
        "pop/pop.00000": "train", "pop/pop.00001": "test", "pop/pop.00003": "train"}  # fmt: skip
    assert result.left_out == ["pop/pop.00002"]
    assert result.groups["pop/pop.00001"] == "B"
    rows[3]["group"] = "B"
    with pytest.raises(SplitError, match=r"label table .*: group groups in several splits: B"):
        make_split(rows, "file", group_by="group")
    rows[0]["split"] = "training"
    with pytest.raises(SplitError, match=r"unknown split names \['training'\]"):
        make_split(rows, "file")
    with pytest.raises(SplitError, match="needs a 'split' column"):
        make_split(tracks({"pop": 2}), "file")


def write_manifest(path, rows):
    path.write_text(
        "genre\ttrack\tmd5\tfeatures\tn_segments\n"
        + "".join(f"{r['genre']}\t{r['track']}\tm\tf.h5\t3\n" for r in rows)
    )


def test_write_split_holdout_keeps_its_table(tmp_path):
    rows = tracks({"jazz": 6, "pop": 6})
    write_manifest(tmp_path / "manifest.tsv", rows)
    write_split(tmp_path / "manifest.tsv", tmp_path / "split.tsv", FRACTIONS, 1)
    lines = (tmp_path / "split.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["genre", "track", "split", "features", "n_segments",
                                     "source_md5"]  # fmt: skip
    expected = assign_splits(rows, FRACTIONS, 1)
    assert [line.split("\t")[2] for line in lines[1:]] == [r["split"] for r in expected]


def test_write_split_kfold_tables(tmp_path):
    manifest = tmp_path / "manifest.tsv"
    rows = tracks({"jazz": 6, "pop": 6})
    write_manifest(manifest, rows)
    folds = [tmp_path / f"fold-{i}.tsv" for i in range(3)]
    write_split(manifest, tmp_path / "split.tsv", FRACTIONS, 1, folds, tmp_path / "info.json",
                method="kfold", folds=3)  # fmt: skip
    header = (tmp_path / "split.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["genre", "track", "split", "features", "n_segments", "source_md5", "fold"]
    assert folds[0].read_text().splitlines()[1:] == [
        line.rsplit("\t", 1)[0] for line in (tmp_path / "split.tsv").read_text().splitlines()[1:]
    ]
    info = json.loads((tmp_path / "info.json").read_text())
    assert [f["test"] for f in info["folds"]] == [4, 4, 4] and info["n_tracks"] == 12


# --- genres too small to split ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "folds", "needs", "small"),
    [("holdout", 5, 3, {"one": 1, "two": 2}), ("kfold", 4, 4, {"one": 1, "two": 2, "three": 3})],
)
def test_small_genres_are_left_out_with_a_warning(caplog, method, folds, needs, small):
    rows = tracks({"jazz": 12, "metal": 12, **small})
    with caplog.at_level("WARNING", logger="genre_classification.data.split"):
        result = make_split(rows, method, FRACTIONS, seed=1, folds=folds)
    for genre, n in small.items():
        track_word = "track" if n == 1 else "tracks"
        assert f"genre '{genre}' has {n} {track_word}; " in caplog.text
        assert f"need{'s' * (method == 'holdout')} at least {needs} tracks per genre" in caplog.text
    assert caplog.text.count("left out of the split") == len(small)
    expected = make_split(tracks({"jazz": 12, "metal": 12}), method, FRACTIONS, 1, folds=folds)
    assert result.folds == expected.folds  # the other genres split as if alone
    for fold in result.folds:
        assert {r["genre"] for r in fold if r["split"] == "test"} == {"jazz", "metal"}
    summary = split_summary(result, method)
    assert [(e["genre"], e["n_tracks"], e["needs"]) for e in summary["excluded_genres"]] == [
        (genre, n, needs) for genre, n in sorted(small.items())
    ]
    assert summary["n_tracks"] == 24 and summary["genres_missing"] == [{}] * len(result.folds)


def test_small_genres_count_groups():
    rows = tracks({"jazz": 9, "metal": 9, "pop": 9})
    groups = {track_key(r): f"{r['genre']}-{i % 4}" for i, r in enumerate(rows)}
    groups.update({track_key(r): "metal-only" for r in rows if r["genre"] == "metal"})
    rows = [{**r, "artist": groups[track_key(r)]} for r in rows]
    with pytest.raises(SplitError, match=r"1 genre\(s\) left to split \(jazz\)"):
        make_split([r for r in rows if r["genre"] != "pop"], "holdout", FRACTIONS,
                   group_by="artist")  # fmt: skip
    result = make_split(rows, "holdout", FRACTIONS, group_by="artist")
    assert {r["genre"] for r in result.folds[0] if r["split"] == "test"} == {"jazz", "pop"}
    assert [e.message() for e in result.excluded] == [
        "genre 'metal' has 9 tracks in 1 artist group(s); a holdout split needs at least 3 "
        "artist groups per genre (one in each of train, val and test)"
    ]


@pytest.mark.parametrize(("method", "folds"), [("holdout", 5), ("kfold", 3)])
def test_fewer_than_two_genres_left_is_an_error(method, folds):
    with pytest.raises(
        SplitError,
        match=r"1 genre\(s\) left to split \(jazz\), at least 2 are needed; .* "
        r"Tracks per genre: jazz 10, one 1, two 2$",
    ):
        make_split(tracks({"jazz": 10, "one": 1, "two": 2}), method, FRACTIONS, folds=folds)


def test_write_split_lists_excluded_genres(tmp_path, caplog):
    write_manifest(tmp_path / "manifest.tsv", tracks({"jazz": 6, "pop": 6, "solo": 1}))
    with caplog.at_level("WARNING"):
        write_split(tmp_path / "manifest.tsv", tmp_path / "split.tsv", FRACTIONS, 1,
                    info_path=tmp_path / "info.json", method="holdout")  # fmt: skip
    assert "genre 'solo' has 1 track;" in caplog.text
    assert "solo" not in (tmp_path / "split.tsv").read_text()
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["excluded_genres"][0]["genre"] == "solo"
    assert "left out" not in info["excluded_genres"][0]["reason"]


def test_file_split_keeps_a_genre_missing_from_test(tmp_path, caplog):
    rows = tracks({"blues": 3, "rock": 2})
    table = tmp_path / "split.tsv"
    table.write_text(
        "track\tsplit\nblues.00000\ttrain\nblues.00001\tval\nblues.00002\ttest\n"
        "rock.00000\ttrain\nrock.00001\ttrain\n"
    )
    write_manifest(tmp_path / "manifest.tsv", rows)
    with caplog.at_level("WARNING"):
        write_split(tmp_path / "manifest.tsv", tmp_path / "out.tsv", FRACTIONS, 1,
                    info_path=tmp_path / "info.json", method="file", split_file=table)  # fmt: skip
    assert "fold 0: no val tracks of genres rock" in caplog.text
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["excluded_genres"] == []
    assert info["genres_missing"] == [{"val": ["rock"], "test": ["rock"]}]


@pytest.mark.parametrize("extension", ["m4a", "opus", "AIFF", "wave", "mp4", "snd"])
def test_file_split_matches_every_readable_extension(tmp_path, extension):
    rows = tracks({"blues": 3, "rock": 3})
    table = tmp_path / "split.tsv"
    splits = ("train", "val", "test") * 2
    lines = ["path\tsplit"] + [
        f"{row['genre']}/{row['track']}.{extension}\t{split}"
        for row, split in zip(rows, splits, strict=True)
    ]
    table.write_text("\n".join(lines) + "\n")
    result = make_split(rows, method="file", split_file=table)
    assert [r["split"] for r in sorted(result.folds[0], key=track_key)] == list(splits)


def test_readable_extensions_are_the_schemas():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    enum = schema["properties"]["data"]["properties"]["extensions"]["items"]["enum"]
    assert list(READABLE_EXTENSIONS) == enum
