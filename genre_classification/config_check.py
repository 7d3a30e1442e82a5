"""Config checks run when the workflow is parsed, before any job, with messages naming the key.

* ``unknown_keys``: keys the schema does not allow (``additionalProperties: false``), each
  with the nearest valid name, because jsonschema's "Additional properties are not allowed"
  names neither the path nor an alternative;
* ``schema_errors``: every other schema violation at once (``snakemake.utils.validate`` stops
  at the first), each with its key path (``training.models.cnn.epochs``); ``type: integer``
  refuses ``1.0`` (JSON Schema counts it as an integer; training would fail on it later), and a
  number written so that YAML reads it as text (``1e-3``) gets the spelling YAML reads as one;
* ``cross_check``: what one key implies for another (``training.run`` ⊆ ``training.models``,
  model ``options`` of its architecture, ``predict.model`` ∈ ``training.models``, no credentials
  in ``training.tracking_uri``).
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from genre_classification.features.features import (
    BUILTIN_SETS,
    DEFAULT_SET,
    FeatureParams,
    feature_set_params,
    feature_sets,
)
from genre_classification.redact import has_credentials
from genre_classification.training import models


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem."""


def _nearest(name: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid: {', '.join(valid) or 'none'}"


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        node = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _object_schema(schema: dict, value: dict, root: dict) -> dict:
    """For ``oneOf``/``anyOf`` of objects: the alternatives whose ``const`` keys match, merged."""
    alternatives = [_resolve(s, root) for s in schema.get("oneOf", schema.get("anyOf", []))]
    objects = [s for s in alternatives if "properties" in s]
    if not objects:
        return schema

    def matches(alternative):
        return all(
            value[key] == prop["const"]
            for key, prop in alternative["properties"].items()
            if "const" in prop and key in value
        )

    chosen = [s for s in objects if matches(s)] or objects
    return {
        "properties": {k: v for s in chosen for k, v in s["properties"].items()},
        "additionalProperties": not all(s.get("additionalProperties") is False for s in chosen),
    }


def unknown_keys(config, schema: dict, root: dict | None = None, path: str = "") -> list[str]:
    """One message per key of ``config`` that ``schema`` does not allow, at every level."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if not isinstance(config, dict):
        return []
    schema = _object_schema(schema, config, root)
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    problems = []
    for key, value in config.items():
        where = f"{path}{key}"
        if key in properties:
            problems += unknown_keys(value, properties[key], root, f"{where}.")
        elif isinstance(extra, dict):
            problems += unknown_keys(value, extra, root, f"{where}.")
        elif extra is False:
            problems.append(f"unknown config key {where!r}{_nearest(str(key), properties)}")
    return problems


def _integer(checker, value) -> bool:
    """``type: integer`` of the config: a whole number written without a decimal point; JSON
    Schema's own check also takes ``1.0``, which Keras then refuses for ``epochs``."""
    return isinstance(value, int) and not isinstance(value, bool)


# PyYAML reads YAML 1.1: a float needs a dot, and an exponent needs its sign (1.0e-3, 1.0e+3).
_NUMBER_AS_TEXT = re.compile(r"\s*[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _yaml_number(text: str) -> str:
    """How to write the number ``text`` (which YAML read as a string) so that YAML reads a
    number: ``1e-3`` -> ``1.0e-3``, ``2E5`` -> ``2.0e+5``."""
    mantissa, _, exponent = text.strip().lower().replace("_", "").partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    elif mantissa.endswith("."):
        mantissa += "0"
    if mantissa.startswith(".") or mantissa[:2] in ("-.", "+."):
        mantissa = mantissa.replace(".", "0.", 1)
    if exponent and exponent[0] not in "+-":
        exponent = f"+{exponent}"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def _describe(error) -> str:
    """``<key path>: <problem>`` of a jsonschema error, with a hint where YAML is the cause."""
    import jsonschema

    if error.validator in ("oneOf", "anyOf") and error.context:
        error = jsonschema.exceptions.best_match(error.context)
    where = ".".join(map(str, error.absolute_path)) or "the config's top level"
    value = error.instance
    if error.validator == "type":
        expected = error.validator_value
        expected = expected if isinstance(expected, list) else [expected]
        if "integer" in expected and isinstance(value, float) and "number" not in expected:
            whole = f": write {int(value)}" if value.is_integer() else ""
            return f"{where}: {value!r} is not an integer (a whole number, no decimal point){whole}"
        if (
            isinstance(value, str)
            and {"integer", "number"} & set(expected)
            and _NUMBER_AS_TEXT.fullmatch(value)
        ):
            if "e" not in value.lower():
                return f"{where}: {value!r} is text, not a number: write it without quotes"
            return (
                f"{where}: {value!r} is text, not a number: YAML (1.1, PyYAML) reads {value} as "
                "a string because its floats need a dot and a signed exponent; write "
                f"{_yaml_number(value)} (without quotes)"
            )
    return f"{where}: {error.message}"


def schema_errors(config: dict, schema: dict) -> list[str]:
    """Every violation of ``schema`` by ``config``, one message each, in the order of the
    config's keys; unknown keys are left to ``unknown_keys``. Defaults are not filled in."""
    import jsonschema

    base = jsonschema.validators.validator_for(schema)
    strict = jsonschema.validators.extend(
        base, type_checker=base.TYPE_CHECKER.redefine("integer", _integer)
    )
    errors = [
        error
        for error in strict(schema).iter_errors(config)
        if error.validator != "additionalProperties"
    ]
    errors.sort(key=lambda e: [str(part) for part in e.absolute_path])
    return list(dict.fromkeys(_describe(error) for error in errors))


def cross_check(config: dict) -> list[str]:
    """Problems spanning several keys (run after schema validation)."""

    training = config["training"]
    known = training["models"]
    problems = [
        f"training.run names {name!r}, which is not in training.models{_nearest(name, known)}"
        for name in training["run"]
        if name not in known
    ]
    for name, model in known.items():
        valid = models.option_names(model["architecture"])
        problems += [
            f"unknown option training.models.{name}.options.{key} of architecture "
            f"{model['architecture']!r}{_nearest(key, valid)}"
            for key in model.get("options") or {}
            if key not in valid
        ]
        if model["architecture"] == "musicnn" and all(
            key in valid for key in model.get("options") or {}
        ):
            problems += [
                f"training.models.{name}.options: {problem}"
                for problem in models.musicnn_option_problems(model)
            ]
    sets = sorted([DEFAULT_SET, *feature_sets(config)])
    for name, model in known.items():
        feature_set = models.feature_set_of(model)
        if feature_set not in sets:
            problems.append(
                f"training.models.{name} uses feature set {feature_set!r}, which is not in "
                f"feature_sets{_nearest(feature_set, sets)}"
            )
            continue
        needed = models.ARCHITECTURE_FEATURE_SETS.get(model["architecture"])
        if needed:  # pretrained weights need exactly their input
            given = FeatureParams.from_config(feature_set_params(config, feature_set))
            differ = {
                key: getattr(given, key)
                for key, value in BUILTIN_SETS[needed].items()
                if key != "segment_seconds" and getattr(given, key) != value
            }
            if differ:
                problems.append(
                    f"training.models.{name} ({model['architecture']}) needs the feature set "
                    f"{needed!r}, but {feature_set!r} differs in {differ} (the weights' input)"
                )
    problems += [
        f"feature_sets name {name!r}: use only letters, digits and '_' (it names a directory)"
        for name in config.get("feature_sets") or {}
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)) or name == DEFAULT_SET
    ]
    predict = config.get("predict") or {}
    if predict.get("sets") and config["split"]["method"] == "kfold":
        problems.append(
            "predict.sets need one trained model, but split.method kfold trains one per fold "
            "(results/models/<model>/fold-<i>/): predict with a holdout or file split (e.g. "
            "`--config split='{method: holdout}'` in a second working directory), or use "
            "`genre-classification predict --model results/models/<model>/fold-<i>/model.keras`"
        )
    model = predict.get("model")
    if model is not None and model not in known:
        problems.append(
            f"predict.model names {model!r}, which is not in training.models"
            f"{_nearest(model, known)}"
        )
    problems += [
        f"predict.sets name {name!r}: use only letters, digits, '_', '.' and '-' (it names "
        "directories and a Snakemake wildcard)"
        for name in predict.get("sets") or {}
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name))
    ]
    problems += _split_file_problems(config["data"], config["split"])
    if has_credentials(training.get("tracking_uri") or ""):
        problems.append(
            "training.tracking_uri contains credentials; config files end up in git and in "
            "Snakemake's metadata: set MLFLOW_TRACKING_URI (or MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD) in the environment instead"
        )
    return problems


def _split_file_problems(data: dict, split: dict) -> list[str]:
    """``split.method: file`` reads ``split.file``, or the label table's own split column."""
    table = data["source"] == "table"
    if split["method"] == "file" and split["file"] is None and not table:
        return [
            "split.method is file: set split.file (a TSV with a track or path column and a "
            "split column), or use data.source table with a split column in the label table"
        ]
    if table and split["file"] is not None and split["file"] == data["table"]["path"]:
        return [
            "split.file is the label table data.table.path: leave split.file null, the label "
            "table's split column is used (its paths are relative to the audio root)"
        ]
    return []


# The schema in a checkout of the workflow (tests, an editable install); the workflow itself
# validates with snakemake.utils.validate (rules/common.smk), which fills the same defaults.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
MODEL_SCHEMA = "/properties/training/properties/models/additionalProperties"


def with_defaults(instance, pointer: str = "", schema_path: str | Path = SCHEMA_PATH):
    """A copy of ``instance`` validated against the schema, or its part at the JSON pointer
    ``pointer`` (``MODEL_SCHEMA``: a model entry), with every absent key's ``default:`` filled
    in as ``snakemake.utils.validate`` does. For code that runs without Snakemake."""
    import jsonschema
    from referencing import Registry, Resource

    schema = yaml.safe_load(Path(schema_path).read_text())
    schema["$id"] = "urn:genre-classification:config"
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, value, subschema):
        if isinstance(value, dict):
            for key, property_schema in properties.items():
                if "default" in property_schema:
                    value.setdefault(key, copy.deepcopy(property_schema["default"]))
        yield from validate_properties(validator, properties, value, subschema)

    validator = jsonschema.validators.extend(base, {"properties": set_defaults})
    instance = copy.deepcopy(instance)
    validator({"$ref": f"{schema['$id']}#{pointer}"}, registry=registry).validate(instance)
    return instance


def model_entry(config: dict, model: str) -> dict:
    """What model ``model`` trains with: its entry of a validated config (every default
    filled in), without ``resources``."""
    entry = config["training"]["models"][model]
    return {key: value for key, value in entry.items() if key != "resources"}


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def check_keys(config: dict, schema_path: str | Path) -> None:
    """Before schema validation: unknown keys, with the nearest valid names."""
    raise_problems(unknown_keys(config, yaml.safe_load(Path(schema_path).read_text())))


def check_schema(config: dict, schema_path: str | Path) -> None:
    """Before ``snakemake.utils.validate`` (which fills the defaults, and stops at the first
    error): unknown keys with the nearest valid names, and every other schema error, in one
    message."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    raise_problems(unknown_keys(config, schema) + schema_errors(config, schema))


def check_values(config: dict) -> None:
    """After schema validation (which fills defaults): the cross-key checks."""
    raise_problems(cross_check(config))
