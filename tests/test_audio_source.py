"""Listing and fetching of the audio source (plain directory, DVC, label table)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genre_classification.data.audio_source import (
    DataSourceError,
    data_version,
    fetch_audio,
    list_collection,
    list_directory,
    list_dvc,
    listing_digest,
    scan_collection,
)
from genre_classification.data.demo_data import make_demo_dataset
from genre_classification.data.dvc_repo import add_and_push, drop_local_copy, init_data_repo
from genre_classification.fileio import read_tsv


def dir_config(root) -> dict:
    return {"source": "dir", "dir": str(root), "extensions": ["wav", "flac", "au"],
            "dvc": {"repo": ".", "target": "x"}}  # fmt: skip


def test_lists_gtzan_layout_and_ignores_other_files(tmp_path):
    (tmp_path / "blues").mkdir()
    (tmp_path / "rock").mkdir()
    sf.write(tmp_path / "blues" / "blues.00000.wav", np.zeros(100), 22050)
    sf.write(tmp_path / "rock" / "rock.00001.au", np.zeros(100), 22050)
    (tmp_path / "rock" / "notes.txt").write_text("x")
    (tmp_path / "stray.wav").write_bytes(b"")
    files = list_directory(tmp_path, ["wav", "au"])
    assert [(f.genre, f.track) for f in files] == [("blues", "blues.00000"), ("rock", "rock.00001")]


def test_missing_dir_and_duplicate_ids_are_clear_errors(tmp_path):
    with pytest.raises(DataSourceError, match="data.dir"):
        list_directory(tmp_path / "nope", ["wav"])
    (tmp_path / "jazz").mkdir()
    sf.write(tmp_path / "jazz" / "a.wav", np.zeros(100), 22050)
    sf.write(tmp_path / "jazz" / "a.flac", np.zeros(100), 22050)
    with pytest.raises(DataSourceError, match="same track id jazz/a"):
        list_directory(tmp_path, ["wav", "flac"])


def test_directory_versions_are_size_and_mtime_and_digest_follows_them(tmp_path):
    make_demo_dataset(tmp_path, 2, seconds=1.0, genres=["jazz"])
    files = list_directory(tmp_path, ["WAV"])  # extensions match case-insensitively
    path = tmp_path / files[0].relpath
    assert files[0].version == f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
    assert files[0].content_md5 is None  # computed by the extraction jobs
    before = listing_digest(files)
    assert listing_digest(list_directory(tmp_path, ["wav"])) == before
    sf.write(tmp_path / "jazz" / "new.wav", np.zeros(100), 22050)
    assert listing_digest(list_directory(tmp_path, ["wav"])) != before


def test_data_version_of_each_source(tmp_path):
    repo, _, data = pushed_dvc_repo(tmp_path, clips=1)
    version = data_version(data)
    assert version["source"] == "dvc" and version["md5"] in (repo / "genres.dvc").read_text()
    assert data_version(dir_config(tmp_path))["md5"] is None  # from content md5s, later


def pushed_dvc_repo(tmp_path, clips: int) -> tuple:
    """A DVC data repo whose audio is only on its (local) remote; returns repo, remote, config."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    init_data_repo(repo, remote)
    make_demo_dataset(repo / "genres", clips, seconds=1.5, genres=["disco"])
    add_and_push(repo, "genres", "v1")
    drop_local_copy(repo, "genres")
    data = {"source": "dvc", "dvc": {"repo": str(repo), "target": "genres"}, "extensions": ["wav"]}
    return repo, remote, data


def test_dvc_listing_has_dvc_md5s_before_any_pull(tmp_path):
    repo, _, data = pushed_dvc_repo(tmp_path, clips=2)
    files = list_collection(data)  # the audio is only on the remote
    assert not (repo / "genres").exists()
    assert [f.relpath for f in files] == ["disco/disco.00000.wav", "disco/disco.00001.wav"]
    fetched = fetch_audio(data, files[1:], tmp_path / "fetched.json")
    assert (repo / "genres" / "disco" / "disco.00001.wav").is_file()  # really pulled
    assert not (repo / "genres" / "disco" / "disco.00000.wav").exists()  # another shard's
    assert fetched == {"disco/disco.00001": files[1].version}
    fetch_audio(data, files[:1], tmp_path / "fetched.json")
    dir_listing = {e["relpath"]: e["md5"] for e in json.loads(
        next((repo / ".dvc" / "cache").rglob("*.dir")).read_text())}  # fmt: skip
    assert {f.relpath: f.version for f in files} == dir_listing
    assert all(f.content_md5 == f.version for f in files)
    assert list_dvc(repo, "genres", ["wav"]) == files  # now from the local cache


def test_fetch_dvc_without_remote_data_names_the_fix(tmp_path):
    import shutil

    _, remote, data = pushed_dvc_repo(tmp_path, clips=1)
    files = list_collection(data)
    shutil.rmtree(remote)
    named = "(?s)dvc fetch.*DVC remote .storage.*failed.*disco.00000.wav.*dvc push"
    with pytest.raises(DataSourceError, match=named):
        fetch_audio(data, files, tmp_path / "fetched.json")

    # Without the remote not even the listing of a new version can be read.
    _, remote, data = pushed_dvc_repo(tmp_path / "second", clips=1)
    shutil.rmtree(remote)
    with pytest.raises(DataSourceError, match="cannot list genres.*DVC remote"):
        list_collection(data)


# --- a label table: path + genre (+ group, split) per file -------------------------------------


def table_config(table, root, extensions=("wav", "flac")) -> dict:
    return {"source": "table", "table": {"path": str(table), "root": root and str(root)},
            "extensions": list(extensions), "dir": None,
            "dvc": {"repo": ".", "target": "x"}}  # fmt: skip


def write_audio(root, relpaths) -> None:
    for relpath in relpaths:
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / relpath, np.zeros(100), 22050, format="WAV")


def test_label_table_gives_genres_labels_and_skips_missing_files(tmp_path):
    root = tmp_path / "fma"
    write_audio(root, ["000/000002.wav", "000/000005.wav", "011/my song é.flac"])
    table = tmp_path / "labels.tsv"
    table.write_text(
        "path\tgenre\tgroup\tsplit\n"
        "000/000002.wav\tHip-Hop\tartist-1\ttrain\n"
        "./000/000005.wav\t Pop \tartist-2\ttest\n"
        "011/my song é.flac\tPop\tartist-2\ttest\n"
        "012/gone.wav\tRock\tartist-3\tval\n"
        "013/notes.txt\tRock\tartist-3\tval\n"
    )
    collection = scan_collection(table_config(table, root))
    files, skipped = collection.files, collection.skipped
    assert [(f.genre, f.track, f.relpath) for f in files] == [
        ("Hip-Hop", "000%2F000002", "000/000002.wav"),
        ("Pop", "000%2F000005", "000/000005.wav"),
        ("Pop", "011%2Fmy song é", "011/my song é.flac"),
    ]
    stat = (root / "000/000002.wav").stat()
    assert files[0].version == f"{stat.st_size}:{stat.st_mtime_ns}"
    assert collection.labels["Pop/011%2Fmy song é"] == {"group": "artist-2", "split": "test"}
    assert [(s["genre"], s["path"], s["reason"]) for s in skipped] == [
        ("Rock", f"{root}/012/gone.wav", f"no such file (line 5 of {table})"),
        ("Rock", f"{root}/013/notes.txt",
         f"extension not in data.extensions (.flac, .wav) (line 6 of {table})"),
    ]  # fmt: skip
    version = data_version(table_config(table, root), collection)
    assert version["table_md5"] == hashlib.md5(table.read_bytes()).hexdigest()
    assert version["source"] == "table" and version["md5"] is None  # content md5s, later


def test_label_table_as_csv(tmp_path):
    write_audio(tmp_path, ["a/x.wav"])
    table = tmp_path / "tracks.csv"
    table.write_text('path,genre,artist\na/x.wav,"Old-Time, Historic",Someone\n')
    collection = scan_collection(table_config(table, tmp_path))
    assert [(f.genre, f.track) for f in collection.files] == [("Old-Time, Historic", "a%2Fx")]
    assert collection.labels == {"Old-Time, Historic/a%2Fx": {"artist": "Someone"}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path\tgenre\na.wav\tpop\nb.wav\trock\n./a.wav\tjazz\n",
         r"labels.tsv, line 4: a.wav is listed twice \(also line 2\)"),
        ("path\tgenre\na.wav\tpop\nb.wav\t \n", r"labels.tsv, line 3: b.wav has no genre"),
        ("path\tgenre\na.wav\tpop\nb.wav\n", r"labels.tsv, line 3: b.wav has no genre"),
        ("path\tgenre\na.wav\tOld-Time / Historic\n", r"line 2: genre 'Old-Time / Historic'"),
        ("path\tgenre\n../a.wav\tpop\n", r"line 2: path ../a.wav must be relative"),
        ("file\tlabel\na.wav\tpop\n", r"labels.tsv has no column path and genre"),
        ("path\tstyle\na.wav\tpop\n", r"labels.tsv has no column genre \(its header: path, st"),
        ("path\tgenre\tmd5\na.wav\tpop\tx\n", r"rename the column\(s\) md5"),
    ],
)  # fmt: skip
def test_label_table_errors_name_the_file_and_line(tmp_path, text, message):
    write_audio(tmp_path, ["a.wav", "b.wav"])
    (tmp_path / "labels.tsv").write_text(text)
    with pytest.raises(DataSourceError, match=message):
        list_collection(table_config(tmp_path / "labels.tsv", tmp_path))


def test_label_table_and_audio_in_a_dvc_project_are_listed_without_pulling(tmp_path):
    """The table and the audio are DVC-tracked and only on the remote: the listing reads the
    table through DVC and the audio's md5s from DVC's listing; fetch_audio pulls a shard."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    init_data_repo(repo, remote)
    write_audio(repo / "audio", ["000/000002.wav", "000/000007.wav"])
    (repo / "labels.tsv").write_text("path\tgenre\n000/000002.wav\tRock\n000/000007.wav\tFolk\n"
                                     "000/000009.wav\tFolk\n")  # fmt: skip
    add_and_push(repo, "audio", "audio")
    add_and_push(repo, "labels.tsv", "labels")
    table_md5 = hashlib.md5((repo / "labels.tsv").read_bytes()).hexdigest()
    drop_local_copy(repo, "audio")
    (repo / "labels.tsv").unlink()
    data = {
        **table_config("labels.tsv", None, ["wav"]),
        "dvc": {"repo": str(repo), "target": "audio"},
    }

    collection = scan_collection(data)
    assert not (repo / "audio").exists()
    assert [(f.genre, f.track) for f in collection.files] == [
        ("Rock", "000%2F000002"), ("Folk", "000%2F000007")]  # fmt: skip
    assert all(len(f.version) == 32 and f.content_md5 == f.version for f in collection.files)
    assert collection.skipped[0]["reason"].startswith("not in the DVC-tracked audio (line 4")
    version = data_version(data, collection)
    assert version["table_md5"] == table_md5 and version["table"] == f"{repo}/labels.tsv"
    assert version["listing_md5"] == listing_digest(collection.files)
    assert len(version["md5"]) == 32
    fetch_audio(data, collection.files[:1], tmp_path / "fetched.json")
    assert (repo / "audio/000/000002.wav").is_file()
    assert not (repo / "audio/000/000007.wav").exists()


# --- symbolic links: a path stays inside its root after resolving links -----------------------


def linked_collection(tmp_path):
    """A root with a file link and a folder link out of it, and a link that stays inside."""
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    write_audio(root, ["jazz/a.wav", "rock/b.wav"])
    write_audio(outside, ["x.wav", "pop/c.wav"])
    (root / "jazz" / "x.wav").symlink_to(outside / "x.wav")
    (root / "pop").symlink_to(outside / "pop", target_is_directory=True)
    (root / "jazz" / "b.wav").symlink_to("../rock/b.wav")  # inside: fine
    (root / "rock" / "loop").symlink_to("..", target_is_directory=True)  # inside, no loop
    return root, outside


def link_reasons(outside, root) -> dict[str, str]:
    advice = f"leaves the audio root {root.resolve()}: copy it below the root or set "
    advice += "data.follow_links: true"
    return {
        f"{root}/jazz/x.wav": f"symbolic link to a file at {outside.resolve()}/x.wav {advice}",
        f"{root}/pop": f"symbolic link to a folder at {outside.resolve()}/pop {advice}",
    }


@pytest.mark.parametrize("source", ["dir", "table", "predict"])
def test_links_leaving_the_root_are_skipped_with_the_reason(tmp_path, source):
    from genre_classification.data.audio_source import scan_unlabelled

    root, outside = linked_collection(tmp_path)
    reasons = link_reasons(outside, root)
    if source == "dir":
        data = dir_config(root)
        listed = ["jazz/a.wav", "jazz/b.wav", "rock/b.wav"]
    elif source == "table":
        table = tmp_path / "labels.tsv"
        table.write_text("path\tgenre\njazz/a.wav\tj\njazz/x.wav\tj\npop/c.wav\tp\njazz/b.wav\tj\n")
        data = table_config(table, root)
        listed = ["jazz/a.wav", "jazz/b.wav"]
        # a table names files: the folder link's file is skipped, naming the folder
        reasons[f"{root}/pop/c.wav"] = reasons.pop(f"{root}/pop") + f" (line 4 of {table})"
        reasons[f"{root}/jazz/x.wav"] += f" (line 3 of {table})"
    else:
        data = {"source": "dir", "dir": str(root), "extensions": ["wav"]}
        listed = ["jazz/a.wav", "jazz/b.wav", "rock/b.wav"]
    scan = scan_unlabelled if source == "predict" else scan_collection
    collection = scan(data)
    assert [f.relpath for f in collection.files] == listed
    assert {s["path"]: s["reason"] for s in collection.skipped} == reasons

    # follow_links: true reads audio behind links (a site that keeps it elsewhere).
    followed = scan(data, True) if source == "predict" else scan({**data, "follow_links": True})
    assert collection.skipped and not followed.skipped
    assert sorted(f.relpath for f in followed.files) == sorted([*listed, "jazz/x.wav", "pop/c.wav"])


def test_link_reasons_reach_rejected_tsv(tmp_path):
    """The listing's skipped files go through the listing extras (written at parse time) into
    results/qc/rejected.tsv, beside the files quarantined by extraction."""
    from genre_classification.data.members import read_listing_extras, write_listing_extras
    from genre_classification.features.shards import write_collection

    root, outside = linked_collection(tmp_path)
    collection = scan_collection(dir_config(root))
    extras = write_listing_extras(tmp_path / "extras.json", collection.skipped, {})
    skipped, _ = read_listing_extras(extras)
    record = tmp_path / "00000.tsv"
    record.write_text("genre\ttrack\tpath\tstatus\treason\n")
    rejected = tmp_path / "rejected.tsv"
    write_collection([record], {"md5": None}, tmp_path / "m.tsv", rejected, tmp_path / "v.json",
                     skipped=skipped)  # fmt: skip
    rows = {r["path"]: r["reason"] for r in read_tsv(rejected)}
    assert rows == link_reasons(outside, root)


def test_dvc_workspace_links_into_its_cache_are_inside(tmp_path):
    """A DVC checkout with `cache.type: symlink` (every file a link into the DVC cache, here
    outside the project) keeps working; a file replaced by a link elsewhere is skipped."""
    import subprocess

    from genre_classification.data.audio_source import dvc_cache_dirs, scan_dvc

    repo, remote, cache = tmp_path / "repo", tmp_path / "remote", tmp_path / "cache"
    init_data_repo(repo, remote)
    for key, value in (("cache.type", "symlink"), ("cache.dir", str(cache))):
        subprocess.run(["dvc", "config", key, value], cwd=repo, check=True)
    make_demo_dataset(repo / "genres", 2, seconds=1.5, genres=["disco", "metal"])
    add_and_push(repo, "genres", "v1")
    linked = repo / "genres" / "disco" / "disco.00000.wav"
    assert linked.is_symlink() and str(cache.resolve()) in str(linked.resolve())
    assert str(cache.resolve()) in [str(Path(d).resolve()) for d in dvc_cache_dirs(repo)][1]
    collection = scan_dvc(repo, "genres", ["wav"])
    assert len(collection.files) == 4 and collection.skipped == []

    elsewhere = tmp_path / "elsewhere.wav"
    sf.write(elsewhere, np.zeros(100), 22050)
    moved = repo / "genres" / "metal" / "metal.00001.wav"
    moved.unlink()
    moved.symlink_to(elsewhere)
    collection = scan_dvc(repo, "genres", ["wav"])
    assert [f.relpath for f in collection.files] == [
        "disco/disco.00000.wav", "disco/disco.00001.wav", "metal/metal.00000.wav"]  # fmt: skip
    assert [s["reason"] for s in collection.skipped] == [
        f"symbolic link to a file at {elsewhere.resolve()} leaves the audio root "
        f"{(repo / 'genres').resolve()}: copy it below the root or set data.follow_links: true"
    ]
    assert len(scan_dvc(repo, "genres", ["wav"], follow_links=True).files) == 4
