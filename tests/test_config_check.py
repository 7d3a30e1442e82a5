"""Config typos and inconsistent keys are rejected when the workflow is parsed, before any job,
with the key's path, the nearest valid name and the valid names."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import REPO, SnakemakeRunner
from genre_classification.config_check import (
    MODEL_SCHEMA,
    ConfigError,
    check_keys,
    check_values,
    cross_check,
    schema_errors,
    unknown_keys,
    with_defaults,
)

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def test_default_config_has_no_unknown_keys(config, schema):
    assert unknown_keys(config, schema) == []
    assert schema_errors(config, schema) == []
    check_values(config)


def test_every_schema_error_is_named_at_once(config, schema):
    cnn = config["training"]["models"]["cnn"]
    cnn.update(epochs=1.0, learning_rate=yaml.safe_load("learning_rate: 1e-3")["learning_rate"])
    config["features"]["n_mels"] = -3
    config["split"]["seed"] = "7"
    assert schema_errors(config, schema) == [
        "features.n_mels: -3 is less than the minimum of 8",
        "split.seed: '7' is text, not a number: write it without quotes",
        "training.models.cnn.epochs: 1.0 is not an integer (a whole number, no decimal point): "
        "write 1",
        "training.models.cnn.learning_rate: '1e-3' is text, not a number: YAML (1.1, PyYAML) "
        "reads 1e-3 as a string because its floats need a dot and a signed exponent; write "
        "1.0e-3 (without quotes)",
    ]
    assert yaml.safe_load("x: 1.0e-3")["x"] == 0.001  # the spelling the hint gives is a number
    # Defaults are not schema errors: an entry without epochs is fine (validate fills it in).
    del cnn["epochs"]
    assert [e for e in schema_errors(config, schema) if "epochs" in e] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(featurs={"n_mels": 64}), "'featurs' (did you mean 'features'?)"),
        (
            lambda c: c["training"]["models"]["cnn"].update(optimiser="sgd"),
            "'training.models.cnn.optimiser' (did you mean 'optimizer'?)",
        ),
        (
            lambda c: c["training"]["models"]["cnn"].update(resources={"mem": 1}),
            "'training.models.cnn.resources.mem' (did you mean 'mem_mb'?)",
        ),
        (
            lambda c: c["reports"].update(reference={"source": "dvc", "rev": "v1", "rve": 1}),
            "'reports.reference.rve' (did you mean 'rev'?); valid: repo, rev, source, target",
        ),
        (lambda c: c["container"].update(imag="x.sif"), "'container.imag' (did you mean 'image'?)"),
        (lambda c: c["split"]["fractions"].update(tset=0.1), "(did you mean 'test'?)"),
        (lambda c: c["predict"].update(modle="cnn"), "'predict.modle' (did you mean 'model'?)"),
        (
            lambda c: c["predict"]["sets"].update(new={"target": "new", "rpo": "x"}),
            "'predict.sets.new.rpo' (did you mean 'repo'?); valid: repo, target",
        ),
    ],
)
def test_unknown_key_named_with_nearest_valid_name(config, schema, change, message):
    config = copy.deepcopy(config)
    change(config)
    problems = unknown_keys(config, schema)
    assert len(problems) == 1 and message in problems[0], problems
    with pytest.raises(ConfigError, match="unknown config key"):
        check_keys(config, SCHEMA_PATH)


def test_cross_checks_list_valid_names(config):
    config = copy.deepcopy(config)
    config["training"]["run"] = ["cnm", "nonexistent"]
    config["training"]["models"]["cnn"]["options"] = {"filter": [4]}
    config["training"]["tracking_uri"] = "https://alice:s3cret@mlflow.example.org"
    problems = cross_check(config)
    assert problems[0] == (
        "training.run names 'cnm', which is not in training.models (did you mean 'cnn'?); "
        "valid: cnn, efficientnet, msd3-knn-probe, msd3-probe, musicnn"
    )
    assert (
        "'nonexistent', which is not in training.models; "
        "valid: cnn, efficientnet, msd3-knn-probe, msd3-probe, musicnn" in problems[1]
    )
    assert "options.filter of architecture 'cnn' (did you mean 'filters'?)" in problems[2]
    assert "training.tracking_uri contains credentials" in problems[3]
    assert "s3cret" not in "".join(problems)
    assert len(problems) == 4


def test_musicnn_option_values_are_checked(config):
    config = copy.deepcopy(config)
    musicnn = config["training"]["models"]["musicnn"]
    musicnn["options"] = {"mode": "probe", "pooling": "mean_std", "checkpoint": "MSD_vgg+MTT_vgg"}
    assert cross_check(config) == []
    musicnn["options"] = {"mode": "finetune", "checkpoint": "MSD_vgg+MTT_vgg"}
    assert cross_check(config) == [
        "training.models.musicnn.options: musicnn checkpoint 'MSD_vgg+MTT_vgg': several "
        "backbones need mode frozen or probe"
    ]
    musicnn["options"] = {"mode": "probe", "pooling": "max"}
    (problem,) = cross_check(config)
    assert problem.startswith("training.models.musicnn.options: ") and "'max'" in problem


def test_predict_model_must_be_a_training_model(config):
    config = copy.deepcopy(config)
    config["predict"]["model"] = "efficientnet"  # not in training.run: trained on demand
    assert cross_check(config) == []
    config["predict"]["model"] = "cnm"
    config["predict"]["sets"] = {"new.2026-11_a": "new", "new set": "x"}
    assert cross_check(config) == [
        "predict.model names 'cnm', which is not in training.models (did you mean 'cnn'?); "
        "valid: cnn, efficientnet, msd3-knn-probe, msd3-probe, musicnn",
        "predict.sets name 'new set': use only letters, digits, '_', '.' and '-' (it names "
        "directories and a Snakemake wildcard)",
    ]


def test_split_method_file_needs_a_file_or_the_label_tables_column(config):
    config = copy.deepcopy(config)
    config["split"]["method"] = "file"
    assert "split.method is file: set split.file" in cross_check(config)[0]
    config["data"].update(source="table", table={"path": "labels.tsv", "root": "/audio"})
    assert cross_check(config) == []  # the label table's split column
    config["split"]["file"] = "labels.tsv"
    assert "split.file is the label table data.table.path: leave" in cross_check(config)[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        ({"featurs": {"n_mels": 64}}, "'featurs' (did you mean 'features'?)"),
        (
            {"training": {"run": ["nonexistent"]}},
            "training.run names 'nonexistent', which is not in training.models; "
            "valid: cnn, efficientnet, msd3-knn-probe, msd3-probe, musicnn",
        ),
        (
            {"predict": {"model": "cnm"}},
            "predict.model names 'cnm', which is not in training.models (did you mean 'cnn'?)",
        ),
        (
            {"predict": {"sets": {"new/set": "new"}}},
            "predict.sets name 'new/set': use only letters, digits",
        ),
        (
            {"training": {"models": {"musicnn": {"options": {"pooling": "auto"}}}}},
            "training.models.musicnn.options: musicnn pooling 'auto' (chosen by "
            "cross-validation) needs mode: probe",
        ),
        (
            {"training": {"models": {"musicnn": {"options": {"checkpoint": "MSD_musicnn+MSD"}}}}},
            "training.models.musicnn.options: unknown musicnn checkpoint 'MSD'",
        ),
    ],
)
def test_dry_run_rejects_before_any_job(tmp_path, overlay, expected):
    """`snakemake -n` fails at parse time: no job is planned, nothing is created."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config/config.yaml").read_text())
    runner = SnakemakeRunner(tmp_path)
    runner.configfiles = ["config/config.yaml"]
    runner.overlay("typo.yaml", overlay)
    result = runner("--cores", "1", "--dry-run", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ConfigError" in output and expected in output, output
    assert "Job stats" not in output and "fetch_audio" not in output
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_dry_run_names_every_schema_error_at_parse_time(tmp_path):
    """`epochs: 1.0` (which passed validation and failed both training attempts) and a second
    schema error are refused together by `snakemake -n`, with the hint for YAML's `1e-3`."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config/config.yaml").read_text())
    runner = SnakemakeRunner(tmp_path)
    runner.configfiles = ["config/config.yaml", "config/wrong.yaml"]
    (tmp_path / "config" / "wrong.yaml").write_text(
        "features:\n  n_fft: 0\n"
        "training:\n  models:\n    cnn:\n      epochs: 1.0\n      learning_rate: 1e-3\n"
    )
    result = runner("--cores", "1", "--dry-run", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ConfigError" in output and "invalid configuration:" in output, output
    for expected in (
        "features.n_fft: 0 is less than the minimum of",
        "training.models.cnn.epochs: 1.0 is not an integer (a whole number, no decimal point)",
        "training.models.cnn.learning_rate: '1e-3' is text, not a number: YAML (1.1, PyYAML) "
        "reads 1e-3 as a string because its floats need a dot and a signed exponent; write "
        "1.0e-3",
    ):
        assert expected in output, output
    assert "Job stats" not in output and not (tmp_path / "results").exists()


def test_predict_sets_with_kfold_name_the_keys_and_the_way_out(config):
    config = copy.deepcopy(config)
    config["split"]["method"] = "kfold"
    assert cross_check(config) == []  # no predict set
    config["predict"]["sets"] = {"new": "new-audio"}
    (problem,) = cross_check(config)
    assert problem.startswith("predict.sets need one trained model, but split.method kfold")
    assert "fold-<i>/model.keras" in problem


# --- the schema is the one source of defaults (issue 14) --------------------------------------

# Keys without a `default:` that are not in their object's `required`, each with the reason.
NO_DEFAULT = {
    # absent: db (features.FeatureParams); a filled-in scale would change the extraction params
    # of existing results and re-extract every feature
    "features.scale",
    # derived: the feature set the model's architecture needs, else the default set
    "training.models.*.features",
    # absent: training.resources (the model's own resources override single keys)
    "training.models.*.resources",
    # only in a sweep (training.sweep is null by default; validate would set keys on null)
    "training.sweep.name",
    "training.sweep.grid",
    "training.sweep.list",
}


def _resolve_ref(node: dict, root: dict) -> dict:
    target = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return target


def schema_keys_without_default(node: dict, root: dict, path: str = "") -> list[str]:
    """Dotted keys below ``node`` with neither a default nor a place in ``required``. An
    object's keys: its own ``properties`` and those of its ``$ref`` (whose defaults, if any,
    are the sibling ``properties``: a feature set or a model's resources override keys)."""
    referenced = _resolve_ref(node, root) if "$ref" in node else {}
    own = node.get("properties", {})
    keys = {**referenced.get("properties", {}), **own}
    required = set(node.get("required", [])) | set(referenced.get("required", []))
    missing = []
    for key, sub in keys.items():
        where = f"{path}{key}"
        if "default" not in own.get(key, {}) and "default" not in sub and key not in required:
            missing.append(where)
        if "$ref" not in sub or sub.get("properties"):
            missing += schema_keys_without_default(sub, root, f"{where}.")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and ("properties" in extra):
        missing += schema_keys_without_default(extra, root, f"{path}*.")
    return missing


def test_every_schema_key_has_a_default_or_is_required(schema):
    missing = set(schema_keys_without_default(schema, schema))
    assert missing == NO_DEFAULT


def test_no_default_in_code():
    """The copies of the defaults that the schema replaced stay gone."""
    from genre_classification.training import train

    assert not hasattr(train, "DEFAULTS") and not hasattr(train, "merge_config")
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert "TRAINING_RESOURCE_DEFAULTS" not in rules
    assert 'config["training"].get(' not in rules


def test_feature_params_defaults_are_the_schemas(schema):
    """FeatureParams keeps defaults for code outside the workflow (tests, benchmarks, old
    feature files); they must be the schema's."""
    from dataclasses import fields

    from genre_classification.features.features import FeatureParams

    defaults = with_defaults({}, "/properties/features")
    assert defaults == {
        f.name: f.default for f in fields(FeatureParams) if f.name != "scale"
    }  # scale: NO_DEFAULT
    assert FeatureParams().scale == "db"


def test_model_entry_defaults_are_the_ones_training_had():
    """A minimal model entry, validated, trains with what train.DEFAULTS gave before."""
    from genre_classification.training import augment, train

    effective = train.model_config(with_defaults({"architecture": "cnn"}, MODEL_SCHEMA))
    assert effective == {
        "architecture": "cnn",
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "epochs": 20,
        "batch_size": 32,
        "early_stopping": {"patience": 5, "min_delta": 0.0, "restore_best_weights": True},
        "seed": 42,
        "mixed_precision": False,
        "deterministic": True,
        "streaming": True,  # since 0.1.0: read per batch from the packs, the same batches
        "calibrate": True,  # new: the probabilities temperature-scaled, the weights as before
        "keep_checkpoints": False,
        "options": {},
        "augment": augment.OFF,
    }
    partial = with_defaults(
        {"architecture": "cnn", "early_stopping": {"patience": 8}}, MODEL_SCHEMA
    )
    assert partial["early_stopping"] == {
        "patience": 8,
        "min_delta": 0.0,
        "restore_best_weights": True,
    }
    with pytest.raises(ValueError, match="schema's defaults"):
        train.model_config({"architecture": "cnn"})


def test_workflow_defaults(config):
    """What a config that leaves the keys out gets (the values the code had as fallbacks)."""
    training = with_defaults(
        {"run": ["cnn"], "models": {"cnn": {"architecture": "cnn"}}}, "/properties/training"
    )
    assert training["threads"] == 2 and training["retries"] == 0
    assert training["tracking_uri"] is None and training["experiment"] == "genre-classification"
    assert training["resources"] == {
        "partition": None,
        "gpu": 0,
        "gres": None,
        "mem_mb": 4000,
        "runtime": 60,
    }
    assert "resources" not in training["models"]["cnn"]  # training.resources applies
    # the shipped config validates to itself plus defaults: nothing it sets changes
    filled = with_defaults(config)
    assert filled["training"]["resources"] == config["training"]["resources"]
    assert filled["features"] == {**config["features"]}
