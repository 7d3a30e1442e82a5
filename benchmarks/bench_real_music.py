"""Real music: from-scratch CNN against pretrained musicnn on the same group-aware folds.

    .venv/bin/python benchmarks/bench_real_music.py                  # build the set, run, table
    .venv/bin/python benchmarks/bench_real_music.py --build-only     # only (re)build the set
    .venv/bin/python benchmarks/bench_real_music.py --json real.json --per-style 30

The set: freely licensed music from Debian 12 packages (`apt-get download` + `dpkg-deb -x`
into --workdir, no root install), five styles (STYLES below: packages, files, licences). Each
source file is rendered to 22.05 kHz mono (ffmpeg; tracker modules through ffmpeg's libopenmpt;
MIDI through fluidsynth and the FluidR3 GM soundfont, both from Debian packages), cut into
non-overlapping `--excerpt` second windows (centred tiling; near-silent windows dropped) and
`--per-style` excerpts are taken per style, round-robin over its source files (so as many
sources as possible), each normalised to the same RMS level (so loudness is no cue). Excerpts
of one source file are one group (`split.group_by: source` with a groups table): no source
file is ever in two of train/val/test. The audio is not committed; it is rebuilt into
--workdir (default ~/.cache/genre-real-music), and a rebuild reuses what is there.

The run: one `snakemake --cores N` in a fresh working directory (--workdir/run) with
`data.source: dir` on the set and `split: {method: kfold, folds: 5, group_by: source}`,
targets the cv_metrics.json of every variant, all trained on the same folds. To keep its 20
trainings near 40 min on 2 CPU cores, only the middle --use-seconds of each excerpt are used
(`features.excerpt_seconds`; default 9 s: three 3 s segments per track) and the fine-tune gets
few epochs (it costs ~0.15 s per training segment and epoch there). The variants:
  cnn               the config's compact CNN from scratch (--epochs-cnn, --patience)
  cnn-augment       the same with `augment` (crop, time and frequency masks, mixup 0.2), if
                    the workflow has it (left out, with a note, when its schema has no `augment`)
  musicnn-frozen    musicnn pretrained on the MSD, {mode: frozen}: a new head on the embedding
                    (computed once per file and cached; --epochs-frozen)
  musicnn-probe     {mode: probe}: logistic regression on the segments' embeddings, C by grouped
                    cross-validation over train and val, temperature-scaled
  vgg-frozen        {mode: frozen, checkpoint: MSD_vgg}: the wheel's vgg, its pool5 embedding
  vgg-probe         {mode: probe, checkpoint: MSD_vgg}
  musicnn-probe-tracks, vgg-probe-tracks  {mode: probe, pooling: auto}: one vector per track,
                    pooling and C by grouped cross-validation, temperature-scaled
  musicnn-pool-probe-tracks  the same on musicnn's `pool` embedding (1,506 values)
  msd3-probe, msd3-probe-tracks, all4-probe-tracks  the same (msd3-probe on segments) on
                    MSD_musicnn+MTT_musicnn+MSD_vgg (all4: + MTT_vgg), embeddings concatenated
  msd3-knn-probe    {mode: probe, classifier: knn} on the same three backbones: a vote of the k
                    nearest training segments (cosine), k by the same cross-validation
  musicnn-frozen-tracks  {mode: frozen, pooling: mean_std}
  musicnn-finetune  {mode: finetune, backbone_learning_rate_factor: 0.1}, from the probe's head
                    (--epochs-finetune)
The frozen/probe variants' embeddings are computed by the `embed_features` jobs (one per
extraction shard, every backbone of the run), shared by all variants and folds of a backbone:
they are listed with the shared jobs, not in a variant's time.
Prints per variant the mean ± std macro-F1 over the folds, mean accuracy, wall time (the
summed durations of its Snakemake jobs: parent run, training, evaluation, aggregation) and the
CPU time (user + sys) of the same jobs (their Snakemake benchmark files: less sensitive to a
shared machine than wall time), then the best pretrained variant's macro-F1 minus the scratch
CNN's, in points, per fold (paired).
--split-seeds S1 S2 ... repeats the run on other fold assignments (`split.seed`; default 42
only) and ends with every variant's macro-F1 over all their folds, each assignment's mean, the
worst fold and how many assignments keep every fold at or above 0.80: with about five test
tracks per style and fold, one assignment's figures move by points from one track.
--evaluate-overlap 0.5 predicts the test tracks on windows that overlap by half a segment
(`training.evaluate.overlap`; five windows of 9 s instead of three segments), training unchanged.
--json writes the settings, the set's composition and the figures.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# the best offline variant's targets: mean macro-F1, every fold, CPU against musicnn-probe's
TARGET_MACRO_F1, TARGET_WORST_FOLD, TARGET_CPU_RATIO = 0.90, 0.80, 2.0
RATE = 22050
TARGET_RMS = 0.1  # -20 dBFS
SILENT_RMS = 1e-3  # windows below -60 dBFS are not used
SOUNDFONT = "usr/share/sounds/sf2/FluidR3_GM.sf2"
FLUIDSYNTH_PACKAGES = ("fluidsynth", "libfluidsynth3", "libinstpatch-1.0-2", "fluid-soundfont-gm")


@dataclass(frozen=True)
class Style:
    name: str
    packages: tuple[str, ...]
    pattern: str  # glob below each extracted package (a zip member glob after "!")
    kind: str  # audio | stems (mix of a directory's .ogg files) | midi
    licence: str
    what: str


STYLES = (
    Style(
        "orchestral",
        ("wesnoth-1.16-music",),
        "usr/share/games/wesnoth/1.16/data/core/music/*.ogg",
        "audio",
        "GPL-2+",
        "Battle for Wesnoth soundtrack: orchestral fantasy score (strings, brass, choir)",
    ),
    Style(
        "rock-metal",
        ("fretsonfire-songs-muldjord", "fretsonfire-songs-sectoid"),
        "usr/share/games/fretsonfire/data/songs/*/*",
        "stems",
        "CC-BY-SA-3.0 (Muldjord), Expat/MIT (Sectoid)",
        "Frets on Fire song packs: metal songs by Muldjord (4) and Sectoid (4); the guitar "
        "and backing stems mixed",
    ),
    Style(
        "tracker",
        ("tecnoballz-data",),
        "usr/share/games/tecnoballz/musics/*.mod",
        "audio",
        "GPL-3+",
        "TecnoballZ: Amiga ProTracker modules (chiptune/tracker), rendered by libopenmpt",
    ),
    Style(
        "electronic",
        ("nexuiz-music",),
        "usr/share/games/nexuiz/data/music.pk3!sound/cdtracks/*.ogg",
        "audio",
        "GPL-2+",
        "Nexuiz soundtrack: electronic / industrial game music",
    ),
    Style(
        "gm-midi",
        ("openttd-openmsx",),
        "usr/share/games/openttd/baseset/openmsx/*.mid",
        "midi",
        "GPL-2 (music); FluidR3 GM soundfont: MIT",
        "OpenMSX (OpenTTD music set): boogie, blues, jazz and light-music General MIDI files, "
        "rendered with fluidsynth and the FluidR3 GM soundfont",
    ),
)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode:
        raise SystemExit(
            f"failed: {' '.join(command)}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result


# --- Debian packages ---------------------------------------------------------------------------


def package_root(work: Path, package: str) -> Path:
    """The package's files below work/pkgs/<package>/ (downloaded and unpacked once)."""
    root = work / "pkgs" / package
    marker = root / ".unpacked"
    if marker.exists():
        return root
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        print(f"  apt-get download {package}", flush=True)
        result = subprocess.run(
            ["apt-get", "download", package], cwd=debs, capture_output=True, text=True
        )
        found = sorted(debs.glob(f"{package}_*.deb"))
        if result.returncode or not found:
            raise SystemExit(
                f"apt-get download {package} failed (Debian 12 package lists needed: "
                f"`apt-get update`):\n{result.stderr[-2000:]}"
            )
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    run(["dpkg-deb", "-x", str(found[-1]), str(root)])
    marker.write_text(found[-1].name + "\n")
    return root


def package_version(work: Path, package: str) -> str:
    deb = (work / "pkgs" / package / ".unpacked").read_text().strip()
    return deb.split("_")[1].replace("%3a", ":")


def fluidsynth(work: Path) -> tuple[list[str], dict, Path]:
    """fluidsynth (the system's, else unpacked from Debian's packages) and the soundfont."""
    roots = [package_root(work, p) for p in FLUIDSYNTH_PACKAGES]
    soundfont = roots[-1] / SOUNDFONT
    env = dict(os.environ)
    system = shutil.which("fluidsynth")
    if system:
        return [system], env, soundfont
    libs = [str(r / "usr/lib/x86_64-linux-gnu") for r in roots]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")])
    return [str(roots[0] / "usr/bin/fluidsynth")], env, soundfont


# --- sources and rendering ---------------------------------------------------------------------


def sources(work: Path, style: Style) -> list[dict]:
    """The style's source files: {package, path (relative to the package), slug, file}."""
    found = []
    for package in style.packages:
        root = package_root(work, package)
        pattern, _, member = style.pattern.partition("!")
        for path in sorted(root.glob(pattern)):
            if style.kind == "stems" and not path.is_dir():
                continue
            if member:
                with zipfile.ZipFile(path) as archive:
                    names = sorted(n for n in archive.namelist() if Path(n).match(member))
                for name in names:
                    rel = f"{path.relative_to(root)}!{name}"
                    found.append(
                        {"package": package, "path": rel, "slug": Path(name).stem, "file": path}
                    )
            else:
                found.append(
                    {
                        "package": package,
                        "path": str(path.relative_to(root)),
                        "slug": path.stem if path.is_file() else path.name,
                        "file": path,
                    }
                )
    for source in found:
        source["slug"] = re.sub(r"[^A-Za-z0-9]+", "-", source["slug"]).strip("-").lower()
    slugs = [s["slug"] for s in found]
    if len(set(slugs)) != len(slugs):
        raise SystemExit(f"{style.name}: two sources with one name: {slugs}")
    return found


def ffmpeg_mono(inputs: list[Path], out: Path) -> None:
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    for path in inputs:
        command += ["-i", str(path)]
    if len(inputs) > 1:  # stems: summed, then scaled by 1/n (no clipping)
        command += ["-filter_complex", f"amix=inputs={len(inputs)}:duration=longest"]
    command += ["-ac", "1", "-ar", str(RATE), "-c:a", "flac", str(out)]
    run(command)


def render(work: Path, style: Style, source: dict) -> Path:
    """The source as 22.05 kHz mono FLAC in work/render/<style>/ (rendered once)."""
    out = work / "render" / style.name / f"{source['slug']}.flac"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.flac")
    scratch = out.with_suffix(".scratch")
    scratch.mkdir(exist_ok=True)
    try:
        if style.kind == "stems":
            ffmpeg_mono(sorted(source["file"].glob("*.ogg")), tmp)
        elif style.kind == "midi":
            command, env, soundfont = fluidsynth(work)
            wav = scratch / "render.wav"
            command += ["-ni", "-q", "-g", "0.5", "-r", str(RATE), "-F", str(wav)]
            run([*command, str(soundfont), str(source["file"])], env=env)
            ffmpeg_mono([wav], tmp)
        elif "!" in source["path"]:
            member = source["path"].split("!", 1)[1]
            extracted = scratch / Path(member).name
            with zipfile.ZipFile(source["file"]) as archive:
                extracted.write_bytes(archive.read(member))
            ffmpeg_mono([extracted], tmp)
        else:
            ffmpeg_mono([source["file"]], tmp)
        tmp.rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        tmp.unlink(missing_ok=True)
    return out


def windows(audio: np.ndarray, seconds: float) -> list[int]:
    """Start samples of the non-overlapping windows (centred tiling) that are not near-silent."""
    n = int(seconds * RATE)
    count = len(audio) // n
    offset = (len(audio) - count * n) // 2
    starts = [offset + k * n for k in range(count)]
    return [s for s in starts if np.sqrt(np.mean(audio[s : s + n] ** 2)) >= SILENT_RMS]


def allocate(capacity: list[int], total: int) -> list[int]:
    """Excerpts per source: round-robin, one at a time, up to each source's capacity."""
    taken = [0] * len(capacity)
    while sum(taken) < total and any(t < c for t, c in zip(taken, capacity, strict=True)):
        for i, cap in enumerate(capacity):
            if taken[i] < cap and sum(taken) < total:
                taken[i] += 1
    return taken


def build_set(work: Path, per_style: int, seconds: float) -> dict:
    """The <style>/<excerpt>.flac set in work/audio, its groups table and excerpt list."""
    import soundfile as sf

    if not shutil.which("ffmpeg"):
        raise SystemExit("ffmpeg is needed (apt-get install ffmpeg, or `make system-deps`)")
    if "libopenmpt" not in run(["ffmpeg", "-hide_banner", "-formats"]).stdout:
        raise SystemExit("this ffmpeg has no libopenmpt: it cannot render tracker modules")
    audio_dir, meta = work / "audio", work / "set"
    meta.mkdir(parents=True, exist_ok=True)
    rows, composition = [], []
    for style in STYLES:
        start = time.perf_counter()
        found = sources(work, style)
        usable = []
        for source in found:
            audio, rate = sf.read(render(work, style, source), dtype="float32")
            assert rate == RATE, rate
            starts = windows(audio, seconds)
            if starts:
                usable.append((source, audio, starts))
        taken = allocate([len(s) for _, _, s in usable], per_style)
        style_rows = []
        n = int(seconds * RATE)
        for (source, audio, starts), count in zip(usable, taken, strict=True):
            picks = [starts[int((i + 0.5) * len(starts) / count)] for i in range(count)]
            for s in picks:
                name = f"{source['slug']}__{s / RATE:05.0f}s"
                out = audio_dir / style.name / f"{name}.flac"
                if not out.exists():
                    clip = audio[s : s + n]
                    gain = TARGET_RMS / np.sqrt(np.mean(clip**2))
                    gain = min(gain, 0.99 / max(np.abs(clip).max(), 1e-9))
                    out.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(out.with_suffix(".tmp"), clip * gain, RATE, format="FLAC")
                    out.with_suffix(".tmp").rename(out)
                style_rows.append(
                    {
                        "track": f"{style.name}/{name}",
                        "source": f"{source['package']}:{source['path']}",
                        "package": source["package"],
                        "start_s": round(s / RATE, 2),
                        "seconds": seconds,
                    }
                )
        rows += style_rows
        versions = {p: package_version(work, p) for p in style.packages}
        for package in style.packages:
            copyright_file = work / "pkgs" / package / "usr/share/doc" / package / "copyright"
            if copyright_file.exists():
                shutil.copy(copyright_file, meta / f"{package}.copyright")
        composition.append(
            {
                "style": style.name,
                "packages": versions,
                "licence": style.licence,
                "what": style.what,
                "source_files": len(found),
                "sources_used": sum(1 for t in taken if t),
                "excerpts": len(style_rows),
                "build_s": round(time.perf_counter() - start, 1),
            }
        )
        used = composition[-1]["sources_used"]
        print(
            f"  {style.name:<11} {len(style_rows):3d} excerpts from {used:2d} of {len(found):2d}"
            f" files  ({', '.join(style.packages)})",
            flush=True,
        )
        if len(style_rows) < per_style:
            print(f"  note: {style.name} has only {len(style_rows)} excerpts", flush=True)
    keep = {f"{r['track']}.flac" for r in rows}
    for path in audio_dir.glob("*/*"):  # excerpts of earlier settings
        if str(path.relative_to(audio_dir)) not in keep:
            path.unlink()
    with open(meta / "groups.tsv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["track", "source"], delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(meta / "excerpts.tsv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    soundfont = work / "pkgs/fluid-soundfont-gm/usr/share/doc/fluid-soundfont-gm/copyright"
    if soundfont.exists():
        shutil.copy(soundfont, meta / "fluid-soundfont-gm.copyright")
    return {"styles": composition, "tracks": len(rows)}


# --- the workflow run --------------------------------------------------------------------------


def variants(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The model entries of the run and notes on left-out variants."""
    base = yaml.safe_load((REPO / "config/config.yaml").read_text())["training"]["models"]
    early = {"patience": args.patience, "restore_best_weights": True}
    cnn = {**base["cnn"], "epochs": args.epochs_cnn, "early_stopping": early}
    musicnn = {**base["musicnn"], "early_stopping": early}
    models = {"cnn": cnn}
    notes = []
    schema = (REPO / "workflow/schemas/config.schema.yaml").read_text()
    if re.search(r"^\s+augment:", schema, re.MULTILINE):
        models["cnn-augment"] = {
            **cnn,
            "augment": {  # config/config.yaml's commented example
                "crop": True,
                "time_mask": {"count": 2, "max_frames": 20},
                "freq_mask": {"count": 2, "max_bands": 16},
                "mixup": 0.2,
            },
        }
    else:
        notes.append("cnn-augment left out: this workflow has no `augment` model key")
    models["musicnn-frozen"] = {
        **musicnn,
        "epochs": args.epochs_frozen,
        "options": {"mode": "frozen"},
    }
    models["musicnn-probe"] = {**musicnn, "options": {"mode": "probe"}}
    for mode in ("frozen", "probe"):
        models[f"vgg-{mode}"] = {
            **models[f"musicnn-{mode}"],
            "options": {"mode": mode, "checkpoint": "MSD_vgg"},
        }
    # track-level heads: one pooled vector per track, pooling and C by grouped cross-validation
    # inside train + val, temperature-scaled probabilities
    tracks = {"mode": "probe", "pooling": "auto"}
    models["musicnn-probe-tracks"] = {**musicnn, "options": tracks}
    models["vgg-probe-tracks"] = {**musicnn, "options": {**tracks, "checkpoint": "MSD_vgg"}}
    models["musicnn-pool-probe-tracks"] = {**musicnn, "options": {**tracks, "embedding": "pool"}}
    # several backbones, the head on segments: config/config.yaml's entry
    models["msd3-probe"] = {**musicnn, **base["msd3-probe"]}
    msd3 = base["msd3-probe"]["options"]["checkpoint"]
    models["msd3-probe-tracks"] = {**musicnn, "options": {**tracks, "checkpoint": msd3}}
    models["msd3-knn-probe"] = {**musicnn, **base["msd3-knn-probe"]}
    models["all4-probe-tracks"] = {
        **musicnn,
        "options": {**tracks, "checkpoint": f"{msd3}+MTT_vgg"},
    }
    models["musicnn-frozen-tracks"] = {
        **models["musicnn-frozen"],
        "options": {"mode": "frozen", "pooling": "mean_std"},
    }
    models["musicnn-finetune"] = {
        **musicnn,
        "epochs": args.epochs_finetune,
        "options": {"mode": "finetune", "backbone_learning_rate_factor": 0.1},
    }
    chosen = {m: c for m, c in models.items() if not args.variants or m in args.variants}
    return chosen, notes


def job_seconds(log: Path) -> list[dict]:
    """Per Snakemake job of the run's log: rule, wildcards and seconds from start to finish."""
    stamp = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
    jobs, now, current = {}, None, None
    for line in log.read_text().splitlines():
        if m := stamp.match(line):
            now = dt.datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"^(?:local)?rule (\S+):$", line):
            current = {"rule": m[1], "start": now, "wildcards": {}}
        elif current and (m := re.match(r"^\s+jobid: (\d+)$", line)):
            jobs[int(m[1])] = current
        elif current and (m := re.match(r"^\s+wildcards: (.*)$", line)):
            current["wildcards"] = dict(kv.split("=", 1) for kv in m[1].split(", "))
        elif m := re.match(r"^Finished jobid: (\d+)", line):
            job = jobs.get(int(m[1]))
            if job:
                job["seconds"] = (now - job["start"]).total_seconds()
    return [j for j in jobs.values() if "seconds" in j]


def run_workflow(
    work: Path, args: argparse.Namespace, models: dict, split_seed: int
) -> tuple[float, Path | None]:
    run_dir = work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "config").mkdir(parents=True)
    shutil.copy(REPO / "config/config.yaml", run_dir / "config/config.yaml")
    overlay = {
        "data": {"source": "dir", "dir": str(work / "audio")},
        "features": {"excerpt_seconds": args.use_seconds},
        "extraction": {"threads": args.cores},
        "split": {
            "method": "kfold",
            "folds": args.folds,
            "group_by": "source",
            "groups": str(work / "set/groups.tsv"),
            "seed": split_seed,
        },
        "training": {
            "run": list(models),
            "models": models,
            "threads": args.cores,
            "evaluate": {"overlap": args.evaluate_overlap},
        },
    }
    (run_dir / "config/bench.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    targets = [f"results/eval/{m}/cv_metrics.json" for m in models]
    command = [
        str(BIN / "snakemake"), "--cores", str(args.cores), "--snakefile",
        str(REPO / "workflow/Snakefile"), "--configfile", "config/config.yaml",
        "config/bench.yaml", *(["--dry-run"] if args.dry_run else []), "--", *targets,
    ]  # fmt: skip
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(run_dir / "snakemake.out", "w") as out:
        result = subprocess.run(command, cwd=run_dir, stdout=out, stderr=subprocess.STDOUT, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    args.workflow_cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if result.returncode:
        tail = (run_dir / "snakemake.out").read_text()[-4000:]
        raise SystemExit(f"snakemake failed (log {run_dir / 'snakemake.out'}):\n{tail}")
    logs = sorted((run_dir / ".snakemake/log").glob("*.snakemake.log"))
    return elapsed, logs[-1] if logs else None


def cpu_seconds(run_dir: Path, rule: str, job: str) -> float:
    """user + sys CPU seconds of a job (``cpu_time`` of its Snakemake benchmark file)."""
    path = run_dir / "results/benchmarks" / rule / f"{job}.tsv"
    if not path.is_file():
        return 0.0
    with open(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return sum(float(r["cpu_time"]) for r in rows if r.get("cpu_time") not in (None, "", "NA"))


def variant_cpu_seconds(run_dir: Path, model: str, folds: int) -> float:
    runs = [f"{model}/fold-{i}" for i in range(folds)]
    per_model = sum(
        cpu_seconds(run_dir, r, model) for r in ("mlflow_parent_run", "aggregate_folds")
    )
    per_run = sum(
        cpu_seconds(run_dir, rule, run)
        for rule in ("train_model", "evaluate_model")
        for run in runs
    )
    return per_model + per_run


def epoch_cap(entry: dict) -> int:
    """Epochs a variant may train: 1 for a probe (its C is chosen by cross-validation)."""
    if entry.get("options", {}).get("mode") == "probe":
        return 1
    return entry["epochs"]


def summarise(run_dir: Path, models: dict, jobs: list[dict], folds: int) -> dict:
    results = {}
    for model in models:
        cv = json.loads((run_dir / f"results/eval/{model}/cv_metrics.json").read_text())
        own = [j for j in jobs if j["wildcards"].get("model") == model]
        epochs, best = [], []
        for history in sorted((run_dir / f"results/models/{model}").glob("fold-*/history.csv")):
            with open(history) as handle:
                rows = list(csv.DictReader(handle))
            # a fine-tune's history starts with epoch 0, the probe it starts from
            epochs.append(sum(int(r["epoch"]) > 0 for r in rows))
            best.append(int(min(rows, key=lambda r: float(r["val_loss"]))["epoch"]))
        results[model] = {
            "macro_f1": cv["macro_f1"],
            "worst_fold_macro_f1": min(cv["macro_f1"]["folds"]),
            "ece": cv.get("ece"),
            "ece_uncalibrated": cv.get("ece_uncalibrated"),
            "temperature": cv.get("temperature"),
            "accuracy": cv["accuracy"],
            "pooled_macro_f1": cv["pooled"]["macro_f1"],
            "per_genre_f1": {g: v["mean"] for g, v in cv["per_genre_f1"].items()},
            "epochs_trained": epochs,
            "best_epoch": best,
            "epoch_cap": epoch_cap(models[model]),
            "wall_s": sum(j["seconds"] for j in own),
            "train_s": sum(j["seconds"] for j in own if j["rule"] == "train_model"),
            "cpu_s": variant_cpu_seconds(run_dir, model, folds),
        }
    return results


def missed_by_every(run_dir: Path, models: list[str]) -> list[dict]:
    """The test tracks that every one of ``models`` puts in a wrong class (out-of-fold
    predictions): the tracks that cap a fold whatever the model."""
    answers: dict[str, list[dict]] = {}  # track -> its row in each model's predictions
    for model in models:
        with open(run_dir / f"results/eval/{model}/oof_predictions.csv") as handle:
            for row in csv.DictReader(handle):
                answers.setdefault(row["track"], []).append(row)
    missed = []
    for track, rows in sorted(answers.items()):
        predicted = [r["predicted"] for r in rows]
        if rows[0]["true"] not in predicted:
            missed.append(
                {
                    "track": track,
                    "true": rows[0]["true"],
                    "fold": int(rows[0]["fold"]),
                    "predicted": max(set(predicted), key=predicted.count),
                }
            )
    return missed


def extraction_seconds(jobs: list[dict], run_dir: Path | None = None) -> dict[str, float]:
    """Wall seconds of the jobs shared by the variants, per rule (and feature set); with
    ``run_dir`` the CPU seconds instead."""
    out: dict[str, float] = {}
    for job in jobs:
        if "model" not in job["wildcards"]:
            where = job["wildcards"].get("feature_dir")
            key = job["rule"] + (f"[{where}]" if where else "")
            if run_dir is None:
                value = job["seconds"]
            else:
                name = "/".join(job["wildcards"].values()) if job["wildcards"] else "all"
                value = cpu_seconds(run_dir, job["rule"], name)
            out[key] = out.get(key, 0.0) + value
    return out


def run_once(work: Path, args: argparse.Namespace, models: dict, split_seed: int) -> dict | None:
    """One workflow run on the folds of ``split_seed``: its table printed, its figures."""
    elapsed, log = run_workflow(work, args, models, split_seed)
    if args.dry_run:
        print((work / "run/snakemake.out").read_text())
        return None
    jobs = job_seconds(log)
    results = summarise(work / "run", models, jobs, args.folds)
    shared_cpu = extraction_seconds(jobs, work / "run")
    cpu_min = args.workflow_cpu_s / 60
    print(f"\nworkflow: {elapsed / 60:.1f} min, cpu {cpu_min:.1f} min ({args.cores} cores); "
          "shared jobs: " + ", ".join(
        f"{k} {v:.0f} s (cpu {shared_cpu.get(k, 0):.0f} s)"
        for k, v in sorted(extraction_seconds(jobs).items())
    ))  # fmt: skip
    print(
        f"\n{'variant':<26} {'macro-F1 (mean ± std)':>22} {'worst':>6} {'accuracy':>9} "
        f"{'ECE (before)':>14} {'wall':>8} {'cpu':>8}  epochs / best epoch / cap"
    )
    for model, r in results.items():
        f1 = r["macro_f1"]
        ece = f"{r['ece']['mean']:.3f}" if r["ece"] else "-"
        if r["ece_uncalibrated"]:
            ece += f" ({r['ece_uncalibrated']['mean']:.3f})"
        print(
            f"{model:<26} {f1['mean']:>13.3f} ± {f1['std']:.3f} {r['worst_fold_macro_f1']:>6.3f}"
            f" {r['accuracy']['mean']:>9.3f} {ece:>14}"
            f" {r['wall_s'] / 60:>6.1f} m {r['cpu_s'] / 60:>6.1f} m  "
            f"{' '.join(map(str, r['epochs_trained']))} / "
            f"{' '.join(map(str, r['best_epoch']))} / {r['epoch_cap']}"
        )
        print(f"{'':<26} folds: " + " ".join(f"{v:.3f}" for v in f1["folds"]))
    comparison = None
    pretrained = [m for m in results if models[m]["architecture"] == "musicnn"]
    if "cnn" in results and pretrained:
        best = max(pretrained, key=lambda m: results[m]["macro_f1"]["mean"])
        diff = 100 * (
            np.array(results[best]["macro_f1"]["folds"])
            - np.array(results["cnn"]["macro_f1"]["folds"])
        )
        comparison = {
            "best_pretrained": best,
            "difference_points": float(diff.mean()),
            "per_fold_points": [round(float(d), 2) for d in diff],
            "target_points": 5.0,
            "holds": bool(diff.mean() >= 5.0),
        }
        print(
            f"\n{best} - cnn: {diff.mean():+.1f} points macro-F1 (target >= +5: "
            f"{'holds' if comparison['holds'] else 'does not hold'}); per fold (paired): "
            + ", ".join(f"{d:+.1f}" for d in diff)
        )
    targets = None
    offline = [m for m in pretrained if models[m]["options"]["mode"] != "finetune"]
    if "musicnn-probe" in results and offline:
        best = max(offline, key=lambda m: results[m]["macro_f1"]["mean"])
        cpu_ratio = results[best]["cpu_s"] / results["musicnn-probe"]["cpu_s"]
        targets = {
            "best_offline": best,
            "macro_f1": results[best]["macro_f1"]["mean"],
            "worst_fold": results[best]["worst_fold_macro_f1"],
            "cpu_vs_probe": cpu_ratio,
        }
        print(
            f"best offline variant {best}: macro-F1 {targets['macro_f1']:.3f} "
            f"(target >= {TARGET_MACRO_F1:.2f}), "
            f"worst fold {targets['worst_fold']:.3f} (target >= {TARGET_WORST_FOLD:.2f}), "
            f"CPU {cpu_ratio:.2f}x musicnn-probe's (target <= {TARGET_CPU_RATIO:g}x; the shared "
            "embedding job not counted)"
        )
    missed = missed_by_every(work / "run", pretrained) if pretrained else []
    if missed:
        print(f"\ntest tracks every pretrained variant gets wrong ({len(missed)}):")
        for m in missed:
            print(f"  fold {m['fold']}  {m['track']:<40} {m['true']} -> {m['predicted']}")
    return {
        "workflow_s": elapsed,
        "workflow_cpu_s": args.workflow_cpu_s,
        "shared_jobs_s": extraction_seconds(jobs),
        "shared_jobs_cpu_s": shared_cpu,
        "results": results,
        "comparison": comparison,
        "targets": targets,
        "missed_by_every_pretrained_variant": missed,
    }


def summarise_seeds(runs: list[dict]) -> dict:
    """Per variant over the runs' fold assignments: the mean macro-F1 of all their folds, each
    assignment's mean, the worst fold and how many assignments keep every fold at or above
    ``TARGET_WORST_FOLD``."""
    print(f"\nover {len(runs)} fold assignments (split.seed " + ", ".join(
        str(r["split_seed"]) for r in runs) + ")")  # fmt: skip
    print(f"{'variant':<26} {'macro-F1':>8}  {'per assignment':<36} {'worst fold':>10}  floor held")
    summary = {}
    for model in runs[0]["results"]:
        per_run = [r["results"][model]["macro_f1"] for r in runs]
        means = [f1["mean"] for f1 in per_run]
        folds = [v for f1 in per_run for v in f1["folds"]]
        held = sum(min(f1["folds"]) >= TARGET_WORST_FOLD for f1 in per_run)
        summary[model] = {
            "macro_f1": float(np.mean(folds)),
            "per_assignment": means,
            "worst_fold": min(folds),
            f"assignments_with_every_fold_at_least_{TARGET_WORST_FOLD:.2f}": held,
        }
        print(
            f"{model:<26} {np.mean(folds):>8.3f}  {' '.join(f'{v:.3f}' for v in means):<36} "
            f"{min(folds):>10.3f}  {held} of {len(runs)}"
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache/genre-real-music")
    parser.add_argument("--per-style", type=int, default=25, help="excerpts per style")
    parser.add_argument("--excerpt", type=float, default=30.0, help="seconds per excerpt")
    parser.add_argument(
        "--use-seconds",
        type=float,
        default=9.0,
        help="features.excerpt_seconds: the middle seconds of each excerpt that are used "
        "(3 s segments: 9 s = 3 segments per track; 0: all)",
    )
    parser.add_argument(
        "--evaluate-overlap",
        type=float,
        default=0.0,
        help="training.evaluate.overlap: test tracks are predicted on windows overlapping by "
        "this share of a segment (0: the segments themselves)",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs-cnn", type=int, default=15)
    parser.add_argument("--epochs-frozen", type=int, default=60)
    parser.add_argument("--epochs-finetune", type=int, default=3)
    parser.add_argument("--patience", type=int, default=4, help="early-stopping patience")
    parser.add_argument("--variants", nargs="+", help="only these (default: all)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--build-only", action="store_true", help="build the set, do not train")
    parser.add_argument("--dry-run", action="store_true", help="build the set, snakemake -n")
    parser.add_argument(
        "--split-seeds",
        type=int,
        nargs="+",
        default=[42],
        help="split.seed of each run (one fold assignment each; several: one run per seed, then "
        "every variant's figures over all their folds)",
    )
    parser.add_argument("--json", type=Path, help="write the settings and figures to this file")
    args = parser.parse_args()
    work = args.workdir.expanduser().resolve()

    start = time.perf_counter()
    print(f"set: {work / 'audio'} ({args.per_style} x {args.excerpt:g} s excerpts per style)")
    composition = build_set(work, args.per_style, args.excerpt)
    build_s = time.perf_counter() - start
    print(f"  {composition['tracks']} tracks, built/checked in {build_s:.0f} s", flush=True)
    if args.build_only:
        return
    models, notes = variants(args)
    settings = {
        "tracks": composition["tracks"],
        "excerpt_s": args.excerpt,
        "used_s": args.use_seconds,
        "evaluate_overlap": args.evaluate_overlap,
        "folds": args.folds,
        "group_by": "source file",
        "epochs_cnn": args.epochs_cnn,
        "epochs_frozen": args.epochs_frozen,
        "epochs_finetune": args.epochs_finetune,
        "patience": args.patience,
        "cores": args.cores,
        "variants": list(models),
        "split_seeds": args.split_seeds,
    }
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    for note in notes:
        print(f"note: {note}")
    runs = []
    for split_seed in args.split_seeds:
        if len(args.split_seeds) > 1:
            print(f"\n=== split.seed {split_seed} ===", flush=True)
        figures = run_once(work, args, models, split_seed)
        if figures is None:  # --dry-run
            return
        runs.append({"split_seed": split_seed, **figures})
    over_seeds = summarise_seeds(runs) if len(runs) > 1 else None
    if args.json:
        document = {"settings": settings, "notes": notes, "set": composition}
        if over_seeds is None:
            document.update(runs[0])
        else:
            document.update(runs=runs, over_split_seeds=over_seeds)
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
