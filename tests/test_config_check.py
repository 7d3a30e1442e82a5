"""Config typos and inconsistent keys are rejected when the workflow is parsed, before any job,
with the key's path, the nearest valid name and the valid names."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import REPO, SnakemakeRunner
from genre_classification.config_check import (
    ConfigError,
    check_keys,
    check_values,
    cross_check,
    unknown_keys,
)

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def test_default_config_has_no_unknown_keys(config, schema):
    assert unknown_keys(config, schema) == []
    check_values(config)


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
        "valid: cnn, efficientnet, musicnn"
    )
    assert (
        "'nonexistent', which is not in training.models; valid: cnn, efficientnet, musicnn"
        in problems[1]
    )
    assert "options.filter of architecture 'cnn' (did you mean 'filters'?)" in problems[2]
    assert "training.tracking_uri contains credentials" in problems[3]
    assert "s3cret" not in "".join(problems)
    assert len(problems) == 4


def test_predict_model_must_be_a_training_model(config):
    config = copy.deepcopy(config)
    config["predict"]["model"] = "efficientnet"  # not in training.run: trained on demand
    assert cross_check(config) == []
    config["predict"]["model"] = "cnm"
    config["predict"]["sets"] = {"new.2026-11_a": "new", "new set": "x"}
    assert cross_check(config) == [
        "predict.model names 'cnm', which is not in training.models (did you mean 'cnn'?); "
        "valid: cnn, efficientnet, musicnn",
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
            "valid: cnn, efficientnet, musicnn",
        ),
        (
            {"predict": {"model": "cnm"}},
            "predict.model names 'cnm', which is not in training.models (did you mean 'cnn'?)",
        ),
        (
            {"predict": {"sets": {"new/set": "new"}}},
            "predict.sets name 'new/set': use only letters, digits",
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


def test_predict_sets_with_kfold_name_the_keys_and_the_way_out(config):
    config = copy.deepcopy(config)
    config["split"]["method"] = "kfold"
    assert cross_check(config) == []  # no predict set
    config["predict"]["sets"] = {"new": "new-audio"}
    (problem,) = cross_check(config)
    assert problem.startswith("predict.sets need one trained model, but split.method kfold")
    assert "fold-<i>/model.keras" in problem
