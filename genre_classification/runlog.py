"""Logging for workflow jobs: everything a job says goes to its Snakemake ``log:`` file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_file(path: str | Path, level: int = logging.INFO, capture_output: bool = False) -> None:
    """Send the root logger (and warnings) to ``path``; uncaught errors are logged too.

    ``capture_output``: also send this process's stdout/stderr there (Keras progress lines,
    TensorFlow's C++ messages). Only for jobs in their own process (``script:`` rules).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if capture_output:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            os.dup2(fd, stream.fileno())
            stream.reconfigure(line_buffering=True)
        os.close(fd)
    logging.basicConfig(filename=path, level=level, format=FORMAT, force=True)
    logging.captureWarnings(True)

    def log_uncaught(kind, value, traceback):
        logging.getLogger("genre_classification").error(
            "job failed", exc_info=(kind, value, traceback)
        )
        sys.__excepthook__(kind, value, traceback)

    sys.excepthook = log_uncaught
