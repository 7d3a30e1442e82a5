"""End to end through the real workflow on a tiny DVC-versioned data set: pull, screen,
per-file extraction, split; and what a new data version or a config change reruns."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import BAD_FILES, TINY_CLIPS, TINY_GENRES, planned_jobs, skip_unless_required
from genre_classification.data.demo_data import synthesize_clip
from genre_classification.data.dvc_repo import add_and_push, drop_local_copy

pytestmark = pytest.mark.slow
TARGETS = ["results/split/split.tsv", "results/qc/rejected.tsv"]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_pull_extract_split_and_quarantine(workflow_dir):
    workflow_dir("--cores", "2", *TARGETS)
    work = workflow_dir.workdir

    # Every good clip has its HDF5 with the documented shape and attributes.
    for genre in TINY_GENRES:
        for i in range(TINY_CLIPS):
            with h5py.File(work / f"results/features/{genre}/{genre}.{i:05d}.h5") as h5:
                logmel = h5["logmel"][()]
                assert logmel.shape == (2, 128, 64)  # 3.5 s -> two 1.5 s segments of 64 frames
                assert np.isfinite(logmel).all()
                assert h5.attrs["label"] == genre
                assert h5.attrs["n_mels"] == 128 and h5.attrs["segment_seconds"] == 1.5
                assert len(h5.attrs["source_md5"]) == 32

    # The bad files are quarantined with their reason, and have no HDF5.
    rejected = {
        f"{r['genre']}/{r['track']}.wav": r["reason"]
        for r in read_rows(work / "results/qc/rejected.tsv")
    }
    assert set(rejected) == set(BAD_FILES)
    for name, reason in BAD_FILES.items():
        assert rejected[name].startswith(reason)
        assert not (work / "results/features" / name).with_suffix(".h5").exists()

    version = (work / "results/data/data_version.json").read_text()
    dvc_md5 = (workflow_dir.data["repo"] / "genres.dvc").read_text().split("md5: ")[1].split()[0]
    assert dvc_md5 in version

    split = read_rows(work / "results/split/split.tsv")
    assert len(split) == len(TINY_GENRES) * TINY_CLIPS
    for genre in TINY_GENRES:
        assert {r["split"] for r in split if r["genre"] == genre} == {"train", "val", "test"}

    dry_run = workflow_dir("--dry-run", *TARGETS)
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr


def test_new_data_version_reextracts_only_the_changed_clip(workflow_dir):
    # 18 files in shards of at most 4: several shard jobs, so "one shard" is a real claim.
    workflow_dir.overlay("shards.yaml", {"extraction": {"files_per_shard": 4}})
    workflow_dir("--cores", "2", *TARGETS)
    work = workflow_dir.workdir
    n_shards = len(list((work / "results/features/.shards").glob("*.tsv")))
    assert n_shards >= 4  # 8 shards by hash, some may be empty
    mtimes = {p: p.stat().st_mtime_ns for p in (work / "results/features").rglob("*.h5")}
    data = workflow_dir.data
    repo = data["repo"]
    # A collaborator changes one clip and publishes a new data version.
    os.system(f"cd {repo} && {Path(os.sys.executable).parent}/dvc pull -q genres.dvc")
    import soundfile as sf

    changed = repo / "genres" / "metal" / "metal.00002.wav"
    sf.write(changed, synthesize_clip("metal", 3.5, 22050, seed=999), 22050, subtype="PCM_16")
    add_and_push(repo, "genres", "new version of one clip")
    # Locally everything is pulled again: every audio file gets a new mtime.
    drop_local_copy(repo, "genres")

    # The dry run, before anything is pulled, already knows which shard will run.
    plan = workflow_dir("--dry-run", *TARGETS)
    jobs = planned_jobs(plan.stdout)
    assert jobs.get("extract_features") == 1, plan.stdout
    assert jobs.get("fetch_audio") == 1 and jobs.get("split_tracks") == 1
    # the shard's member list (its input) changed with the clip's DVC md5
    assert "Updated input files: results/data/shards/" in plan.stdout + plan.stderr

    workflow_dir("--cores", "2", *TARGETS)
    after = {p: p.stat().st_mtime_ns for p in (work / "results/features").rglob("*.h5")}
    rewritten = [p.relative_to(work).as_posix() for p in mtimes if after[p] != mtimes[p]]
    assert rewritten == ["results/features/metal/metal.00002.h5"]
    dry_run = workflow_dir("--dry-run", *TARGETS)
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr


def test_feature_parameter_reextracts_all_others_none(workflow_dir):
    workflow_dir.overlay("shards.yaml", {"extraction": {"files_per_shard": 8}})
    workflow_dir("--cores", "2", *TARGETS)
    n_shards = len(list((workflow_dir.workdir / "results/features/.shards").glob("*.tsv")))

    workflow_dir.overlay("lr.yaml", {"training": {"models": {"cnn": {"learning_rate": 0.01}}}})
    jobs = planned_jobs(workflow_dir("--dry-run", "results/eval/cnn/metrics.json").stdout)
    assert "extract_features" not in jobs and jobs.get("train_model") == 1

    workflow_dir.overlay("seed.yaml", {"split": {"seed": 7}})
    jobs = planned_jobs(workflow_dir("--dry-run", *TARGETS).stdout)
    assert "extract_features" not in jobs and jobs.get("split_tracks") == 1

    workflow_dir.overlay("shards2.yaml", {"extraction": {"threads": 1}})
    jobs = planned_jobs(workflow_dir("--dry-run", *TARGETS).stdout)
    assert "extract_features" not in jobs

    workflow_dir.overlay("mels.yaml", {"features": {"n_mels": 64}})
    jobs = planned_jobs(workflow_dir("--dry-run", *TARGETS).stdout)
    assert jobs.get("extract_features") == n_shards > 1


def test_plain_directory_source(workflow_dir, tmp_path):
    from genre_classification.data.demo_data import make_demo_dataset

    audio = tmp_path / "genres_original"
    # 4 clips: jazz keeps the 3 tracks a holdout needs after one moves to a sub-folder
    make_demo_dataset(audio, 4, seconds=3.5, genres=["jazz", "reggae", "hiphop"])
    (audio / "jazz" / "live").mkdir()
    (audio / "jazz" / "jazz.00000.wav").rename(audio / "jazz" / "live" / "encore.wav")
    (audio / "blues").mkdir()
    workflow_dir.overlay("dir.yaml", {"data": {"source": "dir", "dir": str(audio)}})
    workflow_dir("--cores", "2", *TARGETS)
    split = read_rows(workflow_dir.workdir / "results/split/split.tsv")
    assert sorted({r["genre"] for r in split}) == ["hiphop", "jazz", "reggae"]
    rejected = {
        r["path"]: r["reason"] for r in read_rows(workflow_dir.workdir / "results/qc/rejected.tsv")
    }
    assert rejected[f"{audio}/jazz/live/encore.wav"].startswith("in a sub-folder")
    assert rejected[f"{audio}/blues"].startswith("no audio files")
    version = (workflow_dir.workdir / "results/data/data_version.json").read_text()
    assert '"source": "dir"' in version
    dry_run = workflow_dir("--dry-run", *TARGETS)
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr


@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        ({"features": {"n_mels": "many"}}, "n_mels"),
        ({"data": {"source": "s3"}}, "source"),
        ({"split": {"fractions": {"train": -1, "val": 0.1, "test": 0.1}}}, "train"),
    ],
)
def test_invalid_config_names_the_key(workflow_dir, overlay, expected):
    workflow_dir.overlay("bad.yaml", overlay)
    result = workflow_dir("--dry-run", check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "invalid configuration" in message
    assert expected in message


def test_missing_dvc_file_says_what_to_do(workflow_dir, tmp_path):
    workflow_dir.overlay("nodvc.yaml", {"data": {"dvc": {"repo": str(tmp_path), "target": "x"}}})
    result = workflow_dir("--dry-run", check=False)
    assert result.returncode != 0
    assert "x.dvc not found" in result.stdout + result.stderr


def test_dag_and_rulegraph_render(workflow_dir):
    import shutil
    import subprocess

    dot = shutil.which("dot")
    if dot is None:
        skip_unless_required("graphviz `dot` not installed (make system-deps installs it)")
    for flag in ("--rulegraph", "--dag"):
        graph = workflow_dir(flag).stdout
        assert "digraph snakemake_dag" in graph and "fetch_audio" in graph
        svg = subprocess.run(
            [dot, "-Tsvg"], input=graph, capture_output=True, text=True, check=True
        )
        assert svg.stdout.lstrip().startswith("<?xml") and "</svg>" in svg.stdout


def test_drift_of_a_new_data_version_against_an_earlier_dvc_revision(workflow_dir):
    """The maintainer's question after new audio arrives: does it drift from the version before?
    v2 makes every clip 20 dB quieter and adds noise; the report compares v2 with v1 (`dvc get`)."""
    import json
    import subprocess

    import soundfile as sf

    from genre_classification.data.dvc_repo import dvc_executable

    repo = workflow_dir.data["repo"]
    v1 = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    subprocess.run([dvc_executable(), "pull", "-q", "genres.dvc"], cwd=repo, check=True)
    rng = np.random.default_rng(0)
    for path in (repo / "genres").glob("*/*.*.wav"):  # the good clips, not the bad files
        audio, rate = sf.read(path, dtype="float32")
        shifted = 0.1 * audio + 0.02 * rng.standard_normal(audio.size).astype(np.float32)
        sf.write(path, shifted, rate, subtype="PCM_16")
    add_and_push(repo, "genres", "v2: quieter, noisier recordings")

    target = "results/reports/data_drift.json"
    workflow_dir.overlay(
        "ref.yaml", {"reports": {"reference": {"source": "dvc", "rev": v1.stdout.strip()}}}
    )
    workflow_dir("--cores", "2", target)
    drift = json.loads((workflow_dir.workdir / target).read_text())
    assert drift["dataset_drift"] is True
    assert drift["drifted_share"] > 0.5
    assert drift["features"]["loudness_db_mean"]["drifted"]
    assert (
        drift["reference"]["n_tracks"]
        == drift["current"]["n_tracks"]
        == len(TINY_GENRES) * TINY_CLIPS
    )
    assert drift["data_version"]["md5"] in (repo / "genres.dvc").read_text()


def test_damaged_feature_file_is_named_and_rebuilt_by_a_plain_rerun(workflow_dir):
    """A feature file damaged in place with its size and mtime kept (bytes overwritten: what the
    shard record's stat cannot see): the job reading it fails naming the file; the next plain
    run re-extracts that file only and completes."""
    workflow_dir("--cores", "2", *TARGETS)
    work = workflow_dir.workdir
    damaged = work / "results/features/disco/disco.00003.h5"
    stat = damaged.stat()
    content = damaged.read_bytes()
    damaged.write_bytes(bytes(300) + content[300:])
    os.utime(damaged, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    others = {p: p.stat().st_mtime_ns for p in (work / "results/features").rglob("*.h5")}

    failed = workflow_dir("--cores", "2", "results/tables/tracks.tsv", check=False)
    assert failed.returncode != 0
    # the job that reads it: the track table of its shard
    log = "".join(p.read_text() for p in (work / "logs/track_table_shard").glob("*.log"))
    assert "feature file results/features/disco/disco.00003.h5 cannot be read" in log
    assert "run snakemake again" in log

    workflow_dir("--cores", "2", "results/tables/tracks.tsv")
    with h5py.File(damaged) as h5:
        assert h5["logmel"].shape == (2, 128, 64)
    rewritten = [p for p, m in others.items() if p.stat().st_mtime_ns != m]
    assert rewritten == [damaged]


def test_truncated_feature_file_is_found_by_the_next_plain_run(workflow_dir):
    """After a full run an HDF5 is truncated (a full disk, a killed copy), its shard record
    untouched: a dry run names it and writes nothing; the next plain `snakemake` sees it by the
    record's size and mtime, reruns that shard, which rewrites exactly that file, and then only
    what reads it; then nothing."""
    workflow_dir.overlay("shards.yaml", {"extraction": {"files_per_shard": 4}})
    targets = [*TARGETS, "results/tables/tracks.tsv"]
    workflow_dir("--cores", "2", *targets)
    work = workflow_dir.workdir
    damaged = work / "results/features/metal/metal.00001.h5"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    others = {p: p.stat().st_mtime_ns for p in (work / "results/features").rglob("*.h5")}
    records = {p: p.stat().st_mtime_ns for p in (work / "results/features/.shards").glob("*.tsv")}
    assert len(records) >= 4

    plan = workflow_dir("--dry-run", *targets)
    jobs = planned_jobs(plan.stdout)
    assert jobs == {
        "extract_features": 1,
        "collect_features": 1,
        "split_tracks": 1,
        "track_table_shard": 1,  # the shard of the damaged file only
        "track_table": 1,
    }, plan.stdout
    assert "params have changed since last execution" in plan.stdout + plan.stderr
    # the dry run only reports the damage: nothing is written beside the shard records
    assert f"will re-extract {damaged.relative_to(work)}" in plan.stdout + plan.stderr
    assert not list((work / "results/features/.shards").glob("*.repairs"))

    workflow_dir("--cores", "2", *targets)
    with h5py.File(damaged) as h5:
        assert h5["logmel"].shape == (2, 128, 64)
    rewritten = [p for p, m in others.items() if p.stat().st_mtime_ns != m]
    assert rewritten == [damaged]
    rerun = [p for p, m in records.items() if p.stat().st_mtime_ns != m]
    assert len(rerun) == 1 and str(damaged.relative_to(work)) in rerun[0].read_text()
    dry_run = workflow_dir("--dry-run", *targets)
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr


def test_label_table_with_a_plain_root(workflow_dir, tmp_path):
    """FMA's layout: <root>/000/<id>.wav labelled by a table with group and split columns; the
    split is the table's own (split.method file, no split.file), groups never cross splits."""
    from genre_classification.data.demo_data import make_demo_dataset

    demo, root = tmp_path / "demo", tmp_path / "fma"
    make_demo_dataset(demo, 3, seconds=3.5, genres=["jazz", "reggae", "hiphop"])
    lines, splits = ["path\tgenre\tgroup\tsplit"], {}
    for n, clip in enumerate(sorted(demo.glob("*/*.wav"))):
        relpath = f"{n // 5:03d}/{n:06d}.wav" if n else "000/première prise.wav"
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        clip.rename(root / relpath)
        split = ("train", "val", "test")[n % 3]
        genre = {"hiphop": "Hip-Hop", "jazz": "Jazz", "reggae": "Reggae Dub"}[clip.parent.name]
        lines.append(f"{relpath}\t{genre}\tartist-{split}-{n % 2}\t{split}")
        splits[relpath] = split
    lines.append("009/000099.wav\tJazz\tartist-x\ttrain")  # not on disk
    (tmp_path / "labels.tsv").write_text("\n".join(lines) + "\n")
    workflow_dir.overlay("table.yaml", {
        "data": {"source": "table", "table": {"path": str(tmp_path / "labels.tsv"),
                                              "root": str(root)}},
        "split": {"method": "file", "group_by": "group"},
    })  # fmt: skip
    workflow_dir("--cores", "2", *TARGETS)
    work = workflow_dir.workdir

    split = {r["track"]: r for r in read_rows(work / "results/split/split.tsv")}
    assert len(split) == 9
    assert {r["genre"] for r in split.values()} == {"Hip-Hop", "Jazz", "Reggae Dub"}
    for relpath, expected in splits.items():
        track = relpath.removesuffix(".wav").replace("/", "%2F")
        assert split[track]["split"] == expected
        assert split[track]["group"].startswith(f"artist-{expected}-")
        assert (work / split[track]["features"]).is_file()
    assert (work / "results/features/Hip-Hop/000%2Fpremière prise.h5").is_file()
    manifest = read_rows(work / "results/data/manifest.tsv")
    assert {"group", "split"} <= set(manifest[0])
    rejected = read_rows(work / "results/qc/rejected.tsv")
    assert [(r["path"], r["reason"]) for r in rejected] == [
        (f"{root}/009/000099.wav", f"no such file (line 11 of {tmp_path / 'labels.tsv'})")
    ]
    version = json.loads((work / "results/data/data_version.json").read_text())
    assert version["source"] == "table" and len(version["md5"]) == 32
    assert version["table_md5"] == hashlib.md5((tmp_path / "labels.tsv").read_bytes()).hexdigest()
    dry_run = workflow_dir("--dry-run", *TARGETS)
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr


def test_label_table_in_the_dvc_project(workflow_dir):
    """The table is committed in the DVC project beside the tracked audio, which is only on the
    remote: the listing pulls nothing, fetch_audio pulls the listed files shard by shard."""
    import subprocess

    repo = workflow_dir.data["repo"]
    lines = ["path\tgenre"]
    for genre in TINY_GENRES:
        lines += [f"{genre}/{genre}.{i:05d}.wav\t{genre.title()} Music" for i in range(3)]
    lines += ["classical/broken.wav\tClassical Music", "metal/gone.wav\tMetal Music"]
    (repo / "labels.tsv").write_text("\n".join(lines) + "\n")
    subprocess.run(["git", "add", "labels.tsv"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "labels"], cwd=repo, check=True)
    workflow_dir.overlay(
        "table.yaml", {"data": {"source": "table", "table": {"path": "labels.tsv"}}}
    )

    plan = planned_jobs(workflow_dir("--dry-run", *TARGETS).stdout)
    assert plan.get("fetch_audio") == plan.get("extract_features") == 1
    assert not (repo / "genres").exists()  # listed from DVC, nothing pulled
    workflow_dir("--cores", "2", *TARGETS)
    work = workflow_dir.workdir

    split = read_rows(work / "results/split/split.tsv")
    assert len(split) == 9 and {r["genre"] for r in split} == {"Classical Music", "Disco Music",
                                                                 "Metal Music"}  # fmt: skip
    assert (work / "results/features/Disco Music/disco%2Fdisco.00002.h5").is_file()
    pulled = sorted(
        p.relative_to(repo / "genres").as_posix() for p in (repo / "genres").rglob("*.wav")
    )
    assert pulled == sorted(line.split("\t")[0] for line in lines[1:-1])  # only the listed files
    # paths as configured: data.dvc.repo is relative to the working directory (.test/config)
    configured = repo.relative_to(work)
    rejected = {r["path"]: r["reason"] for r in read_rows(work / "results/qc/rejected.tsv")}
    assert rejected[f"{configured}/genres/classical/broken.wav"].startswith("cannot decode")
    assert rejected[f"{configured}/genres/metal/gone.wav"] == (
        f"not in the DVC-tracked genres (line 12 of {configured}/labels.tsv)"
    )
    version = json.loads((work / "results/data/data_version.json").read_text())
    assert version["source"] == "table" and version["table"] == f"{configured}/labels.tsv"
    assert len(version["md5"]) == len(version["listing_md5"]) == 32
    dry_run = workflow_dir("--dry-run", *TARGETS)
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr
