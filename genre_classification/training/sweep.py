"""``training.sweep``: a grid and/or list of model options expanded into model entries with
readable names (``cnn-lr0.0005-bs16``), trained and evaluated like any other model.

Keys are model keys; nested ones are dotted (``options.filters``, ``early_stopping.patience``).
"""

from __future__ import annotations

import copy
import itertools
import re

# Short name parts; a key not listed here is named by its last component.
ABBREVIATIONS = {
    "learning_rate": "lr",
    "batch_size": "bs",
    "epochs": "ep",
    "seed": "seed",
    "architecture": "",
    "optimizer": "",
    "options.filters": "f",
    "options.dropout": "do",
    "early_stopping.patience": "pat",
}


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _format(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "x".join(_format(v) for v in value)
    return str(value)


def point_name(prefix: str, point: dict) -> str:
    """``cnn`` and ``{"learning_rate": 5e-4, "options.filters": [8, 16]}``: cnn-lr0.0005-f8x16."""
    parts = [prefix]
    for key, value in point.items():
        parts.append(ABBREVIATIONS.get(key, key.rsplit(".", 1)[-1]) + _format(value))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


def points(sweep: dict) -> list[dict]:
    """The grid's cartesian product, then the list entries; each a flat ``{dotted key: value}``."""
    grid = _flatten(sweep.get("grid") or {})
    result = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    if not grid:
        result = []
    return result + [_flatten(entry) for entry in sweep.get("list") or []]


def apply(model: dict, point: dict) -> dict:
    """A deep copy of ``model`` with the dotted keys of ``point`` set."""
    model = copy.deepcopy(model)
    for key, value in point.items():
        *parents, last = key.split(".")
        node = model
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return model


def sweep_models(training: dict) -> dict[str, dict]:
    """The model entries of ``training.sweep`` (empty without one), by name."""
    sweep = training.get("sweep")
    if not sweep:
        return {}
    base = sweep["base"]
    if base not in training["models"]:
        raise ValueError(
            f"training.sweep.base {base!r} is not in training.models ({sorted(training['models'])})"
        )
    result: dict[str, dict] = {}
    for point in points(sweep):
        name = point_name(sweep.get("name") or base, point)
        if name in result or name in training["models"]:
            raise ValueError(f"training.sweep: two models named {name!r}")
        result[name] = apply(training["models"][base], point)
    return result


def expand_sweep(training: dict) -> dict:
    """``training`` with the sweep's models added to ``models`` and to ``run``."""
    extra = sweep_models(training)
    if not extra:
        return training
    return {
        **training,
        "models": {**training["models"], **extra},
        "run": list(dict.fromkeys([*training["run"], *extra])),
    }
