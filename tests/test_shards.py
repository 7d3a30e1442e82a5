"""Sharded extraction: stable shard assignment, per-file recompute decisions, quarantine of bad
files inside a shard, a crashed worker, and a shard killed midway."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from conftest import SMALL_FEATURES
from genre_classification.data import members
from genre_classification.data.audio_source import AudioFile, list_directory
from genre_classification.data.demo_data import make_demo_dataset, synthesize_clip
from genre_classification.data.shards import assign_shards, shard_count
from genre_classification.features import features, shards
from genre_classification.features.features import (
    FeatureFileError,
    FeatureParams,
    existing_features,
    feature_code,
    feature_path,
    read_features,
    repair_requests,
    shard_record_path,
)
from genre_classification.features.shards import extract_shard

PARAMS = SMALL_FEATURES
GENRES = ["classical", "metal"]


def fake_files(n: int) -> list[AudioFile]:
    return [AudioFile("g", f"t{i:06d}", f"g/t{i:06d}.wav", "1:1") for i in range(n)]


def test_shard_count_is_a_power_of_two_bounded_by_files_per_shard():
    assert [shard_count(n, 100) for n in (0, 1, 100, 101, 300, 400, 401)] == [1, 1, 1, 2, 4, 4, 8]
    sizes = [len(m) for m in assign_shards(fake_files(10_000), 2000).values()]
    assert len(sizes) == 8 and sum(sizes) == 10_000
    assert max(sizes) < 1.2 * 10_000 / 8  # a hash spreads files evenly


def test_adding_or_removing_a_file_changes_only_its_own_shard():
    files = fake_files(1000)
    before = assign_shards(files, 300)  # 4 shards
    added = assign_shards([*files, AudioFile("g", "new", "g/new.wav", "1:1")], 300)
    removed = assign_shards(files[:500] + files[501:], 300)
    for after in (added, removed):
        assert set(after) == set(before)
        assert sum(after[name] != before[name] for name in before) == 1
    # The assignment depends on the track id only, not on the order or the other files.
    assert assign_shards(reversed(files), 300) == before


def test_member_lists_are_rewritten_only_when_they_change(tmp_path):
    files = [*fake_files(3), AudioFile("g", "odd\tname\udcff", "g/odd\tname\udcff.wav", "9:9")]
    path = tmp_path / "shards" / "00000.json"
    members.write_member_list(path, files)
    assert members.read_member_list(path) == files
    os.utime(path, ns=(1, 1))
    members.write_member_list(path, list(files))  # same members: the file (and mtime) stays
    assert path.stat().st_mtime_ns == 1
    members.write_member_list(path, files[:2])
    assert path.stat().st_mtime_ns > 1 and members.read_member_list(path) == files[:2]
    path.write_text("garbage")
    with pytest.raises(ValueError, match="00000.json is not a shard member list.*rerun"):
        members.read_member_list(path)


@pytest.fixture
def collection(tmp_path: Path) -> tuple[Path, list[AudioFile]]:
    root = tmp_path / "audio"
    make_demo_dataset(root, 3, seconds=2.5, genres=GENRES)
    return root, list_directory(root, ["wav"])


def run_shard(root, files, tmp_path, threads=2, params=PARAMS) -> dict[str, dict]:
    record = shard_record_path(tmp_path / "features", "00000")
    rows = extract_shard(files, root, tmp_path / "features", params, record, threads)
    return {f"{r['genre']}/{r['track']}": r for r in rows}


def feature_mtimes(tmp_path: Path) -> dict[str, int]:
    """Finished HDF5 files; not the ``.tmp-`` file of a write in progress (it may vanish
    between listing and stat, renamed to its final name)."""
    mtimes = {}
    for path in (tmp_path / "features").glob("*/*.h5"):
        if not path.name.startswith(".tmp-"):
            with contextlib.suppress(FileNotFoundError):
                mtimes[path.relative_to(tmp_path).as_posix()] = path.stat().st_mtime_ns
    return mtimes


def temporary_files(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "features").glob("*/.tmp-*"))


def test_rerun_recomputes_only_what_changed(collection, tmp_path):
    root, files = collection
    first = run_shard(root, files, tmp_path)
    assert {r["status"] for r in first.values()} == {"extracted"}
    mtimes = feature_mtimes(tmp_path)
    assert len(mtimes) == 6

    # Every source touched (as a `dvc pull` does), one rewritten with new content.
    for audio in files:
        os.utime(root / audio.relpath)
    changed = root / "metal" / "metal.00001.wav"
    sf.write(changed, synthesize_clip("metal", 2.5, 22050, seed=7), 22050, subtype="PCM_16")
    second = run_shard(root, list_directory(root, ["wav"]), tmp_path)
    assert [k for k, r in second.items() if r["status"] == "extracted"] == ["metal/metal.00001"]
    after = feature_mtimes(tmp_path)
    assert {k for k in mtimes if after[k] != mtimes[k]} == {"features/metal/metal.00001.h5"}
    assert second["metal/metal.00001"]["md5"] != first["metal/metal.00001"]["md5"]

    # A truncated HDF5 (full disk, killed copy) is rebuilt; a new parameter rebuilds all.
    broken = tmp_path / "features" / "classical" / "classical.00000.h5"
    broken.write_bytes(broken.read_bytes()[:100])
    third = run_shard(root, list_directory(root, ["wav"]), tmp_path)
    assert [k for k, r in third.items() if r["status"] == "extracted"] == [
        "classical/classical.00000"
    ]
    wider = FeatureParams(**{**PARAMS.__dict__, "n_mels": 40})
    fourth = run_shard(root, list_directory(root, ["wav"]), tmp_path, params=wider)
    assert {r["status"] for r in fourth.values()} == {"extracted"}
    assert existing_features(broken, wider)["n_segments"] == 2


def test_dvc_md5_is_trusted_without_reading_the_file(collection, tmp_path):
    root, files = collection
    run_shard(root, files, tmp_path)
    first = feature_mtimes(tmp_path)
    md5s = {
        f"{a.genre}/{a.track}": existing_features(
            feature_path(tmp_path / "features", a.genre, a.track), PARAMS
        )["source_md5"]
        for a in files
    }
    # As a DVC listing gives them: versions are content md5s; the first one is new.
    dvc_listed = [
        AudioFile(a.genre, a.track, a.relpath, md5s[f"{a.genre}/{a.track}"]) for a in files
    ]
    dvc_listed[0] = dataclasses.replace(dvc_listed[0], version="f" * 32)
    rows = run_shard(root, dvc_listed, tmp_path)
    assert [k for k, r in rows.items() if r["status"] == "extracted"] == [
        "classical/classical.00000"
    ]
    assert rows["classical/classical.00000"]["md5"] == "f" * 32
    assert sum(feature_mtimes(tmp_path)[k] != v for k, v in first.items()) == 1


def test_bad_files_are_rejected_with_reason_and_the_rest_written(collection, tmp_path):
    root, _ = collection
    (root / "classical" / "broken.wav").write_bytes(b"RIFF\x00\x01garbage" * 50)
    (root / "metal" / "empty.wav").write_bytes(b"")
    sf.write(root / "metal" / "short.wav", np.zeros(2000, dtype=np.float32), 22050)
    rows = run_shard(root, list_directory(root, ["wav"]), tmp_path)
    reasons = {k: r["reason"] for k, r in rows.items() if r["status"] == "rejected"}
    assert set(reasons) == {"classical/broken", "metal/empty", "metal/short"}
    assert reasons["classical/broken"].startswith("cannot decode")
    assert reasons["metal/empty"].startswith("empty")
    assert reasons["metal/short"].startswith("too short")
    assert len(feature_mtimes(tmp_path)) == 6  # every good file has its HDF5
    assert not (tmp_path / "features" / "metal" / "empty.h5").exists()


def test_a_crashing_worker_costs_only_its_file(collection, tmp_path, monkeypatch):
    root, files = collection
    real_extract = shards.extract_audio

    def extract_or_die(path, *args):
        if Path(path).name == "metal.00000.wav":
            os._exit(1)  # what a segfault in a decoder does to the worker process
        return real_extract(path, *args)

    monkeypatch.setattr(shards, "extract_audio", extract_or_die)  # inherited by forked workers
    rows = run_shard(root, files, tmp_path, threads=2)
    assert rows["metal/metal.00000"]["status"] == "rejected"
    assert "crashed" in rows["metal/metal.00000"]["reason"]
    # The crashed chunk's other files are extracted again, or kept if written before the crash.
    good = [r for r in rows.values() if r["status"] in ("extracted", "kept")]
    assert len(good) == 5
    assert all(Path(r["features"]).is_file() for r in good)


class FullDiskFile(h5py.File):
    """An HDF5 file whose data write fails as h5py reports a full disk (an OSError without
    ``errno``, the number only in the message) for the tracks of genre metal."""

    def create_dataset(self, *args, **kwargs):
        if "/metal/" in self.filename:
            raise OSError(
                "Can't synchronously write data (file write failed: time = Fri Dec  4 20:00:00 "
                f"2026, filename = '{self.filename}', file descriptor = 7, errno = 28, error "
                "message = 'No space left on device', buf = 0x5, total write size = 65536, "
                "bytes this sub-write = 65536, bytes actually written = 18446744073709551615)"
            )
        return super().create_dataset(*args, **kwargs)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_full_disk_fails_the_job_and_quarantines_nothing(
    collection, tmp_path, monkeypatch, threads
):
    root, files = collection
    monkeypatch.setattr(h5py, "File", FullDiskFile)  # inherited by forked workers
    with pytest.raises(shards.ShardWriteError) as failure:
        run_shard(root, files, tmp_path, threads=threads)
    message = str(failure.value)
    features_dir = tmp_path / "features"
    assert f"the features directory {features_dir} cannot take this shard's features" in message
    assert "No space left on device" in message and f"{features_dir}/metal/" in message
    assert "Free there: " in message and "MiB for the " in message
    assert "Free space there" in message and "run snakemake again" in message
    # No record (the job failed, Snakemake reruns it), no quarantine, finished files kept.
    assert not shard_record_path(features_dir, "00000").exists()
    assert sorted(feature_mtimes(tmp_path)) == [
        f"features/classical/classical.{i:05d}.h5" for i in range(3)
    ]
    assert not temporary_files(tmp_path)
    finished = feature_mtimes(tmp_path)

    monkeypatch.undo()  # space freed: the rerun keeps the finished files and extracts the rest
    rows = run_shard(root, files, tmp_path, threads=threads)
    assert {k: r["status"] for k, r in rows.items()} == {
        **{f"classical/classical.{i:05d}": "kept" for i in range(3)},
        **{f"metal/metal.{i:05d}": "extracted" for i in range(3)},
    }
    assert all(feature_mtimes(tmp_path)[k] == v for k, v in finished.items())


def test_only_errors_about_the_audio_quarantine_it(collection, tmp_path, monkeypatch):
    root, files = collection
    real_load = features.load_audio

    def load(path, params):  # what the input's disk says about one file
        if Path(path).name == "metal.00001.wav":
            raise OSError(errno_, os.strerror(errno_), str(path))
        return real_load(path, params)

    monkeypatch.setattr(features, "load_audio", load)
    errno_ = errno.EIO  # a bad sector under the audio file: that file is quarantined
    rows = run_shard(root, files, tmp_path, threads=1)
    assert rows["metal/metal.00001"]["status"] == "rejected"
    assert "Input/output error" in rows["metal/metal.00001"]["reason"]
    errno_ = errno.ENOSPC  # never about the file, even while reading: the job fails
    with pytest.raises(shards.ShardWriteError, match="No space left on device"):
        run_shard(root, files, tmp_path, threads=1)

    # No permission on the output directory (root ignores modes, so the mkdir is refused).
    monkeypatch.setattr(features, "load_audio", real_load)
    real_mkdir = Path.mkdir

    def mkdir(path, *args, **kwargs):
        if path.name == "metal":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    shutil.rmtree(tmp_path / "features" / "metal")
    shard_record_path(tmp_path / "features", "00000").unlink()  # as Snakemake does before a rerun
    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(shards.ShardWriteError, match="Permission denied"):
        run_shard(root, files, tmp_path, threads=1)
    assert not shard_record_path(tmp_path / "features", "00000").exists()


KILLABLE_SHARD = """
import sys
from genre_classification.data.audio_source import list_directory
from genre_classification.features.features import FeatureParams
from genre_classification.features.shards import extract_shard
root, out = sys.argv[1], sys.argv[2]
from conftest import SMALL_FEATURES as PARAMS
extract_shard(list_directory(root, ["wav"]), root, out + "/features", PARAMS, out + "/r.tsv", 1)
"""


def test_shard_killed_midway_keeps_finished_files_and_completes_on_rerun(tmp_path):
    root = tmp_path / "audio"
    make_demo_dataset(root, 20, seconds=20.0, genres=GENRES)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_SHARD, str(root), str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    deadline = time.monotonic() + 120
    while len(feature_mtimes(tmp_path)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = feature_mtimes(tmp_path)
    assert 5 <= len(finished) < 40, "the shard should have been killed midway"
    assert not (tmp_path / "r.tsv").exists()

    rows = run_shard(root, list_directory(root, ["wav"]), tmp_path, threads=2)
    assert len(rows) == 40 and all(r["status"] != "rejected" for r in rows.values())
    kept = {f"features/{k}.h5" for k, r in rows.items() if r["status"] == "kept"}
    assert kept == set(finished)  # nothing finished before the kill was recomputed
    assert not temporary_files(tmp_path)  # a write cut by the kill is cleaned up
    after = feature_mtimes(tmp_path)
    assert all(after[k] == v for k, v in finished.items())
    for path in (tmp_path / "features").glob("*/*.h5"):
        assert existing_features(path, PARAMS) is not None
    assert not list((tmp_path / "features").glob("*/.tmp-*"))


def test_a_damaged_feature_file_names_itself_and_resets_its_shard(collection, tmp_path):
    root, files = collection
    run_shard(root, files, tmp_path)
    damaged = feature_path(tmp_path / "features", "metal", "metal.00002")
    damaged.write_bytes(damaged.read_bytes()[:200])
    with pytest.raises(FeatureFileError, match=f"{damaged} cannot be read.*run snakemake again"):
        read_features(damaged)
    # reported to the shard (a param of its rule), so the next run reruns the shard...
    assert str(damaged) in repair_requests(tmp_path / "features", "00000")
    rows = run_shard(root, files, tmp_path)  # ...which rebuilds only the damaged file
    assert [k for k, r in rows.items() if r["status"] == "extracted"] == ["metal/metal.00002"]
    assert read_features(damaged)[0].shape[0] == 2


def test_a_file_changed_since_its_record_reruns_the_shard_once(collection, tmp_path, caplog):
    """The record keeps each HDF5's size and mtime; listing the shard (a stat per file) names a
    truncated one in the shard's repairs param (and its .repairs file); the job re-extracts only it
    and the next listing gives the same text (no second rerun)."""
    root, files = collection
    first = run_shard(root, files, tmp_path)
    record = shard_record_path(tmp_path / "features", "00000")
    for row in first.values():
        stat = os.stat(row["features"])
        assert (row["features_size"], row["features_mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    assert repair_requests(tmp_path / "features", "00000") == ""
    before = feature_mtimes(tmp_path)

    damaged = feature_path(tmp_path / "features", "classical", "classical.00001")
    damaged.write_bytes(damaged.read_bytes()[:500])  # truncated, as a full disk leaves it
    # a dry run (nothing runs): the same param, only logged, no .repairs file
    with caplog.at_level(logging.WARNING, logger="genre_classification.features.features"):
        planned = repair_requests(tmp_path / "features", "00000", persist=False)
    assert not record.with_suffix(".repairs").exists()
    assert f"will re-extract {damaged}\tchanged since the shard record" in caplog.text
    param = repair_requests(tmp_path / "features", "00000")
    assert param == planned
    assert param.startswith(f"{damaged}\tchanged since the shard record (")
    assert param.count("\n") == 1

    # kept in the .repairs file (the param's text when the job starts, its record removed)
    assert record.with_suffix(".repairs").read_text() == param
    rows = {f"{r['genre']}/{r['track']}": r for r in extract_shard(
        files, root, tmp_path / "features", PARAMS, record, 2
    )}  # fmt: skip
    assert [k for k, r in rows.items() if r["status"] == "extracted"] == [
        "classical/classical.00001"
    ]
    after = feature_mtimes(tmp_path)
    assert {k for k in before if after[k] != before[k]} == {"features/classical/classical.00001.h5"}
    assert read_features(damaged)[0].shape[0] == 2
    assert repair_requests(tmp_path / "features", "00000") == param  # the same param: no rerun

    # A file that is gone is named too.
    gone = feature_path(tmp_path / "features", "metal", "metal.00000")
    moved = gone.with_suffix(".moved")
    gone.rename(moved)
    assert f"{gone}\tchanged since the shard record (" in repair_requests(
        tmp_path / "features", "00000", persist=False
    )
    moved.rename(gone)


def test_a_copied_file_is_not_named_a_replaced_one_is(collection, tmp_path):
    """A results tree copied with tar (whole-second mtimes) or cp -r / rsync -r (new mtimes):
    same size, mtime equal to the second, or the content check passes (source_md5 and segment
    count as recorded; kept in <shard>.verified, so it is opened once). Another file of the
    same size (another track's HDF5 copied over it) is named."""
    root, files = collection
    run_shard(root, files, tmp_path)
    record = shard_record_path(tmp_path / "features", "00000")
    features = tmp_path / "features"
    tarred = feature_path(features, "metal", "metal.00000")
    stat = os.stat(tarred)
    os.utime(tarred, ns=(stat.st_atime_ns, stat.st_mtime_ns // 10**9 * 10**9))
    copied = feature_path(features, "metal", "metal.00001")
    later = os.stat(copied).st_mtime_ns + 5 * 10**9
    os.utime(copied, ns=(later, later))  # as cp -r leaves it: a new mtime
    assert repair_requests(features, "00000") == ""
    verified = record.with_suffix(".verified").read_text()
    assert str(copied) in verified and str(tarred) not in verified
    assert not record.with_suffix(".repairs").exists()

    replaced = feature_path(features, "metal", "metal.00002")
    other = feature_path(features, "classical", "classical.00002")
    assert os.path.getsize(replaced) == os.path.getsize(other)
    replaced.write_bytes(other.read_bytes())
    os.utime(replaced, ns=(later, later))  # (within the record's second it would pass)
    assert repair_requests(features, "00000").startswith(f"{replaced}\tchanged since")


def test_a_record_without_the_stat_columns_is_not_rechecked(collection, tmp_path):
    """Records written before features_size / features_mtime_ns: nothing is named, so an
    upgrade reruns no shard."""
    root, files = collection
    run_shard(root, files, tmp_path)
    record = shard_record_path(tmp_path / "features", "00000")
    lines = record.read_text().splitlines()
    old = ["\t".join(line.split("\t")[:-2]) for line in lines]
    assert old[0].endswith("status\treason")
    record.write_text("\n".join(old) + "\n")
    for path in (tmp_path / "features").glob("*/*.h5"):
        os.utime(path)  # would all count as changed with the columns
    assert repair_requests(tmp_path / "features", "00000") == ""


LIMITED_EXTRACTION = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1000 * 2**20, 1000 * 2**20))
if sys.argv[1] == "librosa.load":
    import librosa
    librosa.load(sys.argv[2], sr=22050, mono=True)
else:
    from genre_classification.features.features import FeatureParams, extract_audio
    params = FeatureParams(excerpt_seconds=0)  # the whole file
    print(extract_audio(sys.argv[2], sys.argv[3], params, "x", "0" * 32)[0])
"""


def test_long_many_channel_file_is_extracted_within_a_memory_limit(tmp_path):
    """10 min at 96 kHz, 8 channels (1.8 GB as float32 frames) under a 1,000 MB address-space
    limit: block-wise mono decoding fits; decoding all channels at once (librosa.load) does not."""
    path = tmp_path / "long.wav"
    rate, channels = 96000, 8
    block = (0.1 * np.random.default_rng(0).standard_normal((rate * 10, channels))).astype("f4")
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as handle:
        for _ in range(60):
            handle.write(block)

    def run(mode):
        command = [
            sys.executable,
            "-c",
            LIMITED_EXTRACTION,
            mode,
            str(path),
            str(tmp_path / "o.h5"),
        ]
        return subprocess.run(command, capture_output=True, text=True)

    ours = run("extract_audio")
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert ours.stdout.strip() == "(200, 128, 129)"  # 600 s in 3 s segments
    naive = run("librosa.load")
    assert naive.returncode != 0 and "MemoryError" in naive.stderr


def test_a_file_of_other_feature_code_is_re_extracted(collection, tmp_path):
    """Every HDF5 records the fingerprint of the code that computes features (feature_code); a
    rerun of the shard re-extracts a file whose recorded code differs and keeps one without the
    attribute (written before it existed)."""
    root, files = collection
    run_shard(root, files, tmp_path)
    older = feature_path(tmp_path / "features", "metal", "metal.00000")
    before = feature_path(tmp_path / "features", "metal", "metal.00001")
    with h5py.File(older, "a") as h5:
        assert h5.attrs["feature_code"] == feature_code()
        h5.attrs["feature_code"] = "0123456789abcdef"
    with h5py.File(before, "a") as h5:
        del h5.attrs["feature_code"]
    rows = run_shard(root, files, tmp_path)
    assert [k for k, r in rows.items() if r["status"] == "extracted"] == ["metal/metal.00000"]
    assert rows["metal/metal.00001"]["status"] == "kept"
