"""Logging for workflow jobs: everything a job says goes to its Snakemake ``log:`` file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_file(path: str | Path, level: int = logging.INFO) -> None:
    """Send the root logger (and warnings) to ``path``; uncaught errors are logged too."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=path, level=level, format=FORMAT, force=True)
    logging.captureWarnings(True)

    def log_uncaught(kind, value, traceback):
        logging.getLogger("genre_classification").error(
            "job failed", exc_info=(kind, value, traceback)
        )
        sys.__excepthook__(kind, value, traceback)

    sys.excepthook = log_uncaught
