import copy
import functools
import os
import threading
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from genre_classification.code_version import write_code_record
from genre_classification.config_check import check_schema, check_values
from genre_classification.data.audio_source import (
    audio_root,
    data_version,
    scan_collection,
    scan_unlabelled,
    uses_dvc,
)
from genre_classification.data.members import write_listing_extras, write_member_list
from genre_classification.data.shards import assign_shards
from genre_classification.features.shards import shard_runtime_minutes
from genre_classification.features.features import (
    DEFAULT_SET,
    feature_set_dir,
    feature_set_of_dir,
    feature_set_params,
    repair_requests,
    shard_record_path,
)
from genre_classification.features.packs import index_path, pack_path, sums_path
from genre_classification.jobcontrol import stop_jobs_on_signals, workflow_environment
from genre_classification.predict.predict_set import set_source
from genre_classification.redact import redact_logger
from genre_classification.slurm_watch import PendingWatch, request_of_job, unfit_jobs
from genre_classification.training.embeddings import cached_backbones
from genre_classification.training.embeddings import (
    shard_record_path as embedding_record_path,
)
from genre_classification.training.model_kinds import kind_of
from genre_classification.training.models import feature_set_of
from genre_classification.training.sweep import expand_sweep

# The schema is the one source of defaults: `validate` fills every absent key with its
# `default:` (config/README.md lists them).
CONFIG_SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
# Every problem at once (unknown keys, wrong types, `epochs: 1.0`), before validate stops at one.
check_schema(config, CONFIG_SCHEMA)
validate(config, CONFIG_SCHEMA, set_default=False)
# Sweep points become ordinary model entries, validated like the ones written out.
config["training"] = expand_sweep(config["training"])
# The model entries as written (plus sweep points), before the defaults are filled in: the
# params of the training jobs (training_model_config), so that a default moving between code
# and schema, or a new model key with a default, does not rerun every trained model.
WRITTEN_MODELS = copy.deepcopy(config["training"]["models"])
check_schema(config, CONFIG_SCHEMA)
validate(config, CONFIG_SCHEMA)
check_values(config)


wildcard_constraints:
    genre="[^/]+",
    track="[^/]+",
    shard="[0-9]+",
    feature_dir="features(-[A-Za-z0-9_]+)?",


def release_scheduler_timers():
    """Snakemake's job scheduler re-arms a non-daemon threading.Timer of
    --max-jobs-per-timespan (1 s) each round; the interpreter waits for the last one at exit.
    Cancelling it once the run is over saves up to a second per invocation."""
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


def check_slurm_jobs():
    """With the slurm executor (main process, onstart): stop before submitting a job that no
    node of its partition can run, then report and cancel jobs that Slurm keeps pending for
    ever (a retry grown too big, a QOS limit) instead of waiting (slurm_watch)."""
    plugin = workflow.executor_plugin
    checks = config["slurm"]["pending_checks"]
    if plugin is None or plugin.cli_prefix != "slurm" or not checks:
        return
    from snakemake.logging import logger

    jobs = [j for j in workflow.dag.needrun_jobs() if not j.is_local]
    unfit = unfit_jobs([r for r in map(request_of_job, jobs) if r is not None])
    if unfit:
        raise WorkflowError("\n".join(unfit) + " Nothing was submitted.")
    PendingWatch(
        Path(workflow.workdir_init),
        logger.error,
        interval_s=config["slurm"]["pending_check_s"],
        checks=checks,
    ).start()


# --- Output paths, named once: the rules' outputs, inputs and the targets use these names
# (docs/CONTRACTS.md describes the files). "{run}" stands for RUN (below): a model, or a model's
# fold with k folds.
FEATURES_DIR = "results/features"
# One directory per feature set: results/features (the default set), results/features-<set>.
FEATURE_SET_DIR = "results/{feature_dir}"
SHARD_RECORD = str(shard_record_path(FEATURE_SET_DIR, "{shard}"))
# A shard's segments packed into one array (the training input), its index and band sums.
PACK = str(pack_path(FEATURE_SET_DIR, "{shard}"))
PACK_INDEX = str(index_path(PACK))
PACK_SUMS = str(sums_path(PACK))
# The record of a shard's pretrained embeddings (cached beside its HDF5s: musicnn frozen/probe).
EMBEDDING_RECORD = str(embedding_record_path(FEATURE_SET_DIR, "{shard}"))
FETCHED = "results/data/fetched/{shard}.json"
# A shard's files (genre, track, path, version): an input of its jobs, written when the workflow
# is parsed and only when the listing changed them (data.members.write_member_list).
SHARD_MEMBERS = "results/data/shards/{shard}.json"
# Skipped files and a label table's other columns, written the same way (collect_features).
LISTING_EXTRAS = "results/data/listing_extras.json"
MANIFEST = "results/data/manifest.tsv"
REJECTED = "results/qc/rejected.tsv"
DATA_VERSION = "results/data/data_version.json"
SPLIT = "results/split/split.tsv"
SPLIT_INFO = "results/split/split_info.json"
FOLD_SPLIT = "results/split/folds/fold-{fold}.tsv"
MODEL_DIR = "results/models/{run}"
MODEL = f"{MODEL_DIR}/model.keras"
MODEL_FEATURES = f"{MODEL_DIR}/features.json"
HISTORY = f"{MODEL_DIR}/history.csv"
# Not an output (rules/train.smk says why): the training job's epoch checkpoints.
CHECKPOINT_DIR = f"{MODEL_DIR}/checkpoints"
RUN_RECORD = "results/mlflow/runs/{run}.json"
PARENT_RUN = "results/mlflow/runs/{model}/parent.json"
EVAL_DIR = "results/eval/{run}"
METRICS = f"{EVAL_DIR}/metrics.json"
PREDICTIONS = f"{EVAL_DIR}/predictions.csv"
CONFUSION = f"{EVAL_DIR}/confusion_matrix.png"
CV_METRICS = "results/eval/{model}/cv_metrics.json"
OOF_PREDICTIONS = "results/eval/{model}/oof_predictions.csv"
OOF_CONFUSION = "results/eval/{model}/oof_confusion_matrix.png"
SUMMARY_TABLE = "results/eval/summary.tsv"
SUMMARY_PLOT = "results/eval/summary.png"
TRACK_TABLE = "results/tables/tracks.tsv"
TRACK_TABLE_SHARD = "results/tables/shards/{shard}.tsv"
REFERENCE_TABLE = "results/reference/tracks.tsv"
REFERENCE_INFO = "results/reference/reference.json"
CLASSIFICATION_REPORT = "results/reports/{model}/classification.{ext}"
DATA_DRIFT_REPORT = "results/reports/data_drift.{ext}"
DATA_QUALITY_REPORT = "results/reports/data_quality.{ext}"
PREDICT_DIR = "results/predict/{set}"
PREDICT_FEATURES = f"{PREDICT_DIR}/features"
PREDICT_RECORD = str(shard_record_path(PREDICT_FEATURES, "{shard}"))
PREDICT_FETCHED = f"{PREDICT_DIR}/fetched/{{shard}}.json"
PREDICT_SHARD_MEMBERS = f"{PREDICT_DIR}/shards/{{shard}}.json"
PREDICT_MANIFEST = f"{PREDICT_DIR}/manifest.tsv"
PREDICT_REJECTED = f"{PREDICT_DIR}/rejected.tsv"
PREDICT_VERSION = f"{PREDICT_DIR}/data_version.json"
PREDICT_LISTING_EXTRAS = f"{PREDICT_DIR}/listing_extras.json"
PREDICT_PREDICTIONS = f"{PREDICT_DIR}/predictions.csv"
PREDICT_TRACKS = f"{PREDICT_DIR}/tracks.tsv"
PREDICT_DRIFT_REPORT = "results/reports/predict/{set}/drift.{ext}"
# The Evidently monitoring workspace (`evidently ui --workspace results/evidently`): the report
# jobs add their snapshots to it (not an output: every run adds, a rerun replaces its own).
EVIDENTLY_WORKSPACE = "results/evidently"
# Snakemake's benchmark file of every job (`benchmark:` of each rule, benchmark_path) and what
# resource_usage (rules/resources.smk) makes of them: one row per job, used vs declared.
BENCHMARK = "results/benchmarks/{rule}/{job}.tsv"
JOB_RESOURCES = "results/resources/jobs.tsv"
JOB_RESOURCES_PLOT = "results/resources/jobs.png"


# A rule's code: the package code its script runs (its import closure,
# genre_classification.code_version) and the script, as digests. Written when the workflow is
# parsed and only when that code changed (like SHARD_MEMBERS), an input of every job of the
# rule: changing training/ reruns train_model and what reads its outputs, nothing upstream, and
# `snakemake -n -r` says "Updated input files: results/code/train_model.json".
CODE_RECORD = "results/code/{script}.json"
# script -> its record, written once per invocation
_CODE_RECORDS = {}


def code_of(script):
    """The code record of ``scripts/<script>.py`` (an input: ``code=code_of("train_model")``);
    logs which files changed since the record was last written."""
    if script not in _CODE_RECORDS:
        path = CODE_RECORD.format(script=script)
        source = workflow.current_basedir.join(f"../../scripts/{script}.py")
        local = source.get_path_or_uri(secret_free=True)
        changed = write_code_record(path, local if os.path.isfile(local) else None)
        if changed:
            logger.info(f"code of {script} changed: {', '.join(changed)}")
        _CODE_RECORDS[script] = path
    return _CODE_RECORDS[script]


def report_path(pattern, ext):
    """A report's html or json path: ``pattern`` with ``{ext}`` filled, other wildcards kept."""
    return pattern.replace("{ext}", ext)


def benchmark_path(rule, job):
    """The benchmark file of a job of ``rule``; ``job``: its wildcards as a path ("{shard}")
    or a name for a rule without wildcards ("all")."""
    return BENCHMARK.replace("{rule}", rule).replace("{job}", job)


# Benchmark files in Snakemake's extended format (as --benchmark-extended): each also holds the
# job's rule, wildcards, threads and resources as evaluated for it (mem_mb, runtime of the
# attempt), which results/resources/jobs.tsv sets against what the job used. Snakemake's only
# public switch is that flag (profile key `benchmark-extended`, in profiles/*); a workflow
# profile (workflow/profiles/default) is skipped by `--workflow-profile none` and shadowed by a
# profiles/default/ in the working directory, and the API has no default. So that a plain
# `snakemake -c8` gets the columns too, the workflow sets the flag's OutputSettings attribute
# (Snakemake 9; passed on to Slurm job steps as --benchmark-extended). Should a release drop
# it, the run warns and jobs.tsv has no declared mem_mb/runtime (resources.job_row leaves them
# empty) unless the flag is given.
if hasattr(workflow.output_settings, "benchmark_extended"):
    workflow.output_settings.benchmark_extended = True
else:
    logger.warning(
        "this Snakemake has no output_settings.benchmark_extended: pass --benchmark-extended "
        "for the declared resources in results/resources/jobs.tsv"
    )

# Interrupts (docs/troubleshooting.md). A signal to this process alone (a wrapper, a
# scheduler, `kill -INT <pid>`) reaches no job, and Snakemake's own SIGTERM waits for the
# running jobs: on SIGINT or SIGTERM the workflow first sends SIGTERM to every process below
# this one (onstart: jobcontrol.stop_jobs_on_signals), and every job also watches this process,
# named in its environment, and stops when it has ended (jobcontrol.watch_workflow). Training
# keeps its epoch checkpoints. The outputs of jobs stopped that way are marked incomplete, and
# "run the same command again" must redo them: the workflow profile workflow/profiles/default
# sets --rerun-incomplete (the DAG settings do not exist yet when this file is parsed;
# profiles/local and profiles/slurm set it too).
os.environ.update(workflow_environment())

# Credentials out of Snakemake's own log: with --verbose the Slurm job step logs its whole
# environment (AWS keys, tokens in URIs) into .snakemake/slurm_logs.
redact_logger(logger.name)


def shard_repairs(features_dir, shard):
    """The ``repairs`` param of an extraction shard (``repair_requests``): recorded in its
    ``.repairs`` file only when jobs run; a dry run (``-n``; also --summary, --dag, --report,
    which execute nothing) only logs a newly found damaged file. ``workflow.dryrun`` is False
    before an executor is chosen, hence the executor check."""
    executing = workflow.executor_plugin is not None and not workflow.dryrun
    return repair_requests(features_dir, shard, persist=executing)


def run_path(pattern, run):
    """A per-run path (``MODEL``, ``METRICS``, ...) of ``run``: RUN for a rule, or a run name."""
    return pattern.replace("{run}", run)


@functools.cache
def audio_collection():
    """Every audio file of the configured source with its version (DVC's per-file md5s, or
    size:mtime of a plain directory), what is skipped with the reason, and a label table's
    other columns. Listed once per Snakemake invocation; no audio is read."""
    return scan_collection(config["data"])


@functools.cache
def audio_shards():
    return assign_shards(
        audio_collection().files, config["extraction"]["files_per_shard"]
    )


def listing_extras(wildcards):
    collection = audio_collection()
    return str(
        write_listing_extras(LISTING_EXTRAS, collection.skipped, collection.labels)
    )


def fetched_audio(wildcards):
    """DVC-tracked audio (source dvc, or a label table without a plain root) is pulled shard by
    shard before extraction; a plain directory is read in place."""
    if not uses_dvc(config["data"]):
        return []
    return FETCHED.format(shard=wildcards.shard)


# member list path -> written (once per invocation: each is compared with the listing once)
_MEMBER_LISTS = {}


def _member_list(path, files):
    if path not in _MEMBER_LISTS:
        _MEMBER_LISTS[path] = str(write_member_list(path, files()))
    return _MEMBER_LISTS[path]


def shard_members(wildcards):
    """The member list file of a shard (an input: a changed listing reruns only its shard)."""
    return _member_list(
        SHARD_MEMBERS.format(shard=wildcards.shard),
        lambda: audio_shards()[wildcards.shard],
    )


def shard_runtime(wildcards, threads, attempt):
    n_files = len(audio_shards()[wildcards.shard])
    per_file = config["extraction"]["runtime_s_per_file"]
    return shard_runtime_minutes(n_files, per_file, threads, attempt)


def feature_set_records(name):
    """The shard records of feature set ``name``: what makes Snakemake extract it."""
    feature_dir = feature_set_dir(FEATURES_DIR, name).name
    return [
        SHARD_RECORD.format(feature_dir=feature_dir, shard=shard)
        for shard in audio_shards()
    ]


def shard_records(wildcards=None):
    return feature_set_records(DEFAULT_SET)


def extraction_params(wildcards):
    return feature_set_params(config, feature_set_of_dir(wildcards.feature_dir))


def model_feature_records(wildcards):
    """A model on another feature set than the default needs that set extracted."""
    name = feature_set_of(config["training"]["models"][wildcards.model])
    return [] if name == DEFAULT_SET else feature_set_records(name)


def model_packs(wildcards):
    """The packs (and their indexes and band sums) of every shard of a model's feature set."""
    feature_dir = model_feature_dir(wildcards.model)
    packs = [
        PACK.format(feature_dir=feature_dir, shard=shard) for shard in audio_shards()
    ]
    return {
        "packs": packs,
        "pack_indexes": [str(index_path(pack)) for pack in packs],
        "pack_sums": [str(sums_path(pack)) for pack in packs],
    }


def model_feature_dir(model):
    """The features directory of a model's feature set (results/<this>)."""
    name = feature_set_of(config["training"]["models"][model])
    return feature_set_dir(FEATURES_DIR, name).name


def cached_backbones_of(feature_dir):
    """[checkpoint, embedding] of the models of training.run on this feature set that train
    on cached embeddings: what its embed_features jobs compute."""
    models = config["training"]["models"]
    entries = [
        models[m] for m in training_models() if model_feature_dir(m) == feature_dir
    ]
    return cached_backbones(entries)


def model_embedding_records(step):
    """The embed_features records of every shard of a model's feature set, for the jobs of
    ``step`` that read the cache: "train" (frozen, probe, a fine-tune from the probe's
    head), "evaluate" (frozen, probe); none for other models."""

    def records(wildcards):
        kind = kind_of(config["training"]["models"][wildcards.model])
        if not kind.reads_embeddings(step):
            return []
        feature_dir = model_feature_dir(wildcards.model)
        return [
            EMBEDDING_RECORD.format(feature_dir=feature_dir, shard=shard)
            for shard in audio_shards()
        ]

    return records


def embed_runtime(wildcards, attempt):
    """About extraction.embedding_s_per_file per file and backbone (one thread's worth)."""
    n_files = len(audio_shards()[wildcards.shard])
    n_backbones = len(cached_backbones_of(wildcards.feature_dir))
    per_file = config["extraction"]["embedding_s_per_file"]
    return shard_runtime_minutes(n_files * n_backbones, per_file, 1, attempt)


def pack_runtime(wildcards, attempt):
    """Packing reads and writes a shard's features once: about 5 ms per 30 s file."""
    return (10 + len(audio_shards()[wildcards.shard]) // 1000) * attempt


def final_targets(wildcards):
    """The default target list (all): the results of every stage, then the resource
    records of their jobs (resource_usage runs after all of them)."""
    return [*stage_targets(), JOB_RESOURCES, JOB_RESOURCES_PLOT]


def resource_usage_inputs(wildcards):
    """What resource_usage waits for: the stage targets but the HTML reports, whose JSON twin
    comes from the same job. Snakemake skips an mtime-triggered rerun when a copied input's
    checksum is unchanged only for files up to 1 MB, and the reports are larger: a results tree
    copied with new mtimes (cp -r) would otherwise rerun resource_usage."""
    return [path for path in stage_targets() if not path.endswith(".html")]


def stage_targets(wildcards=None):
    return [
        DATA_VERSION,
        REJECTED,
        MANIFEST,
        SPLIT,
        *training_targets(),
        *report_targets(),
        *predict_targets(),
    ]


# --- training / evaluation (rules in rules/train.smk; maintained with the training stage) ---


def written_model(name):
    """Model ``name``'s entry as written (WRITTEN_MODELS). Until the schema held every default,
    the first validation filled augment.crop and augment.mixup in: still so, so that models
    with augment do not rerun."""
    entry = WRITTEN_MODELS[name]
    if isinstance(entry.get("augment"), dict):
        augment = dict(entry["augment"])
        augment.setdefault("crop", False)
        augment.setdefault("mixup", 0)
        entry = {**entry, "augment": augment}
    return entry


def training_model_config(wildcards):
    """The ``params.model_config`` of a model's jobs (a rerun trigger): its entry as written,
    without resources. The jobs train on the validated entry, every default filled in
    (``config_check.model_entry``)."""
    if wildcards.model not in WRITTEN_MODELS:
        raise ValueError(
            f"model {wildcards.model!r} is not in training.models ({sorted(WRITTEN_MODELS)})"
        )
    entry = written_model(wildcards.model)
    return {k: v for k, v in entry.items() if k != "resources"}


def training_resource(name):
    """Resource ``name`` of a model: training.models.<m>.resources > training.resources
    (whose schema defaults are filled in; a model's own resources have none)."""

    def get(wildcards):
        own = config["training"]["models"][wildcards.model].get("resources", {})
        return own.get(name, config["training"]["resources"][name])

    return get


def training_mem_mb(wildcards, input, attempt):
    """training.resources.mem_mb (or the model's), x attempt; a model trained in memory
    (``streaming: false``) asks for the size of its feature set's packs on top (all splits:
    an upper bound of its training segments)."""
    mem_mb = training_resource("mem_mb")(wildcards)
    if not config["training"]["models"][wildcards.model]["streaming"]:
        mem_mb += sum(os.path.getsize(pack) for pack in input.packs) // 1_000_000
    return mem_mb * attempt


def training_gres(wildcards):
    """Slurm --gres: the explicit gres string, else gpu:<n> when gpu > 0, else none ("")."""
    gres = training_resource("gres")(wildcards)
    gpu = training_resource("gpu")(wildcards)
    return gres or (f"gpu:{gpu}" if gpu else "")


def training_models():
    """Models that become training jobs: training.run (checked by check_values at parse time)."""
    return list(config["training"]["run"])


# Cross-validation: one training and evaluation job per (model, fold). A single split (holdout,
# file) is one fold and keeps the per-model paths results/models/{model}/model.keras etc.
KFOLD = config["split"]["method"] == "kfold"
N_FOLDS = config["split"]["folds"] if KFOLD else 1
RUN = "{model}/fold-{fold}" if KFOLD else "{model}"


def fold_runs(model):
    """The runs of one model: ``cnn/fold-0`` ... with k folds, else ``cnn``."""
    return [RUN.format(model=model, fold=fold) for fold in range(N_FOLDS)]


def run_of(wildcards):
    return RUN.format(**dict(wildcards.items()))


def run_split(wildcards):
    """The split table a run trains and tests on."""
    return FOLD_SPLIT.format(fold=wildcards.fold) if KFOLD else SPLIT


def parent_run(wildcards):
    """The MLflow parent run of a model's folds (k-fold only)."""
    return {"parent": PARENT_RUN.format(model=wildcards.model)} if KFOLD else {}


def eval_per_fold(pattern):
    """The ``pattern`` (``METRICS``, ``PREDICTIONS``) path of each fold of a model."""
    return lambda wildcards: [
        run_path(pattern, run) for run in fold_runs(wildcards.model)
    ]


def model_predictions(wildcards):
    """A model's test predictions: pooled out of fold with k folds."""
    if KFOLD:
        return OOF_PREDICTIONS.format(model=wildcards.model)
    return run_path(PREDICTIONS, wildcards.model)


def model_run_record(wildcards):
    """The MLflow run that gets a model's reports: the parent run with k folds."""
    if KFOLD:
        return PARENT_RUN.format(model=wildcards.model)
    return run_path(RUN_RECORD, wildcards.model)


def training_targets(wildcards=None):
    """Per run: model file, history, MLflow run record and evaluation outputs; per model: the
    cross-validation aggregate; and the comparison table of all models."""
    per_run = [
        path
        for model in training_models()
        for run in fold_runs(model)
        for path in (
            run_path(MODEL, run),
            run_path(HISTORY, run),
            run_path(RUN_RECORD, run),
            run_path(METRICS, run),
            run_path(PREDICTIONS, run),
            run_path(CONFUSION, run),
        )
    ]
    per_model = [
        pattern.format(model=model)
        for model in training_models()
        for pattern in (CV_METRICS, OOF_PREDICTIONS, OOF_CONFUSION)
    ]
    return [*per_run, *per_model, SUMMARY_TABLE, SUMMARY_PLOT]


# --- split (rule in rules/split.smk)


def split_inputs(wildcards):
    """The manifest; quarantined files (a split table may name them); the tables of
    split.file and split.groups when set (without split.file, method file uses the label
    table's split column, in the manifest)."""
    split = config["split"]
    inputs = {"manifest": MANIFEST}
    if split["method"] == "file" and split["file"]:
        inputs["table"] = split["file"]
        inputs["rejected"] = REJECTED
    if split["group_by"] and split["groups"]:
        inputs["groups"] = split["groups"]
    return inputs


# Holdout without groups has the outputs and params it always had (no rerun of existing
# results); other methods add a summary (counts, left-out tracks), k-fold the fold tables.
SPLIT_EXTRA, SPLIT_OPTIONS = {}, {}
if config["split"]["method"] != "holdout" or config["split"]["group_by"]:
    SPLIT_EXTRA["info"] = SPLIT_INFO
    SPLIT_OPTIONS = {
        key: config["split"][key] for key in ("method", "folds", "group_by")
    }
if KFOLD:
    SPLIT_EXTRA["folds"] = [FOLD_SPLIT.format(fold=fold) for fold in range(N_FOLDS)]


# --- Evidently report targets (rules in rules/reports.smk; maintained with the reports stage)


# params of the report jobs: where their Evidently snapshots go (reports.monitoring)
MONITOR_PARAMS = {
    "monitor_workspace": EVIDENTLY_WORKSPACE,
    "monitor_project": config["training"]["experiment"],
}


def drift_reference_inputs(wildcards):
    if config["reports"]["reference"] is None:
        return {}
    return {"reference": REFERENCE_TABLE, "reference_info": REFERENCE_INFO}


def report_targets(wildcards=None):
    """Track table, data drift and quality reports, and a classification report per model."""
    return [
        TRACK_TABLE,
        *(report_path(DATA_DRIFT_REPORT, ext) for ext in ("html", "json")),
        *(report_path(DATA_QUALITY_REPORT, ext) for ext in ("html", "json")),
        *(
            CLASSIFICATION_REPORT.format(model=model, ext=ext)
            for model in training_models()
            for ext in ("html", "json")
        ),
    ]


# --- predict sets (rules/predict.smk; logic: genre_classification.predict.predict_set) ---


def predict_model():
    """The training.models entry that predicts: predict.model, else the first of training.run."""
    return config["predict"]["model"] or training_models()[0]


def predict_model_files(wildcards=None):
    model = predict_model()
    return {
        "model": run_path(MODEL, model),
        "model_features": run_path(MODEL_FEATURES, model),
    }


@functools.cache
def predict_source(name):
    """The set as a data-like config section (source, dir or dvc, extensions)."""
    if name not in config["predict"]["sets"]:
        raise ValueError(
            f"predict set {name!r} is not in predict.sets ({sorted(config['predict']['sets'])})"
        )
    return set_source(config["predict"]["sets"][name], config["data"])


@functools.cache
def predict_collection(name):
    """The set's files (every audio file below it) and the skipped ones, listed once per
    invocation."""
    return scan_unlabelled(predict_source(name), config["data"]["follow_links"])


@functools.cache
def predict_shards(name):
    files = predict_collection(name).files
    return assign_shards(files, config["extraction"]["files_per_shard"])


def predict_listing_extras(wildcards):
    """The set's skipped files (links leaving its root), for its rejected.tsv."""
    path = PREDICT_LISTING_EXTRAS.format(set=wildcards.set)
    return str(
        write_listing_extras(path, predict_collection(wildcards.set).skipped, {})
    )


def predict_fetched(wildcards):
    if predict_source(wildcards.set)["source"] != "dvc":
        return []
    return PREDICT_FETCHED.format(set=wildcards.set, shard=wildcards.shard)


def predict_shard_members(wildcards):
    return _member_list(
        PREDICT_SHARD_MEMBERS.format(set=wildcards.set, shard=wildcards.shard),
        lambda: predict_shards(wildcards.set)[wildcards.shard],
    )


def predict_shard_runtime(wildcards, threads, attempt):
    n_files = len(predict_shards(wildcards.set)[wildcards.shard])
    per_file = config["extraction"]["runtime_s_per_file"]
    return shard_runtime_minutes(n_files, per_file, threads, attempt)


def predict_shard_records(wildcards):
    return [
        PREDICT_RECORD.format(set=wildcards.set, shard=shard)
        for shard in predict_shards(wildcards.set)
    ]


def predict_targets(wildcards=None):
    """Predictions and the drift report of every predict set."""
    return [
        path
        for name in config["predict"]["sets"]
        for path in (
            PREDICT_PREDICTIONS.format(set=name),
            PREDICT_DRIFT_REPORT.format(set=name, ext="html"),
            PREDICT_DRIFT_REPORT.format(set=name, ext="json"),
        )
    ]
