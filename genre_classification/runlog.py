"""Logging for workflow jobs: everything a job says goes to its Snakemake ``log:`` file.

Everything written there passes through ``redact.redact`` (credentials in URIs, tokens).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from genre_classification.jobcontrol import watch_workflow
from genre_classification.redact import RedactingStream, redact

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def log_to_file(path: str | Path, level: int = logging.INFO, capture_output: bool = False) -> None:
    """Send the root logger (and warnings) to ``path``; uncaught errors are logged too. In a
    workflow job, also start watching the Snakemake process: the job stops when it has ended
    (``jobcontrol.watch_workflow``).

    ``capture_output``: also send this process's stdout/stderr there (Keras progress lines,
    TensorFlow's C++ messages). Only for jobs in their own process (``script:`` rules). The
    message of an uncaught error is then also printed to the original stderr (the console).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    console = None
    if capture_output:
        console = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            os.dup2(fd, stream.fileno())
            stream.reconfigure(line_buffering=True)
        os.close(fd)
        if not isinstance(sys.stdout, RedactingStream):
            sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    handler = logging.FileHandler(path)
    handler.setFormatter(RedactingFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)

    def log_uncaught(kind, value, traceback):
        logging.getLogger("genre_classification").error(
            "job failed", exc_info=(kind, value, traceback)
        )
        sys.__excepthook__(kind, value, traceback)
        if console is not None:
            console.write(redact(f"{kind.__name__}: {value}\n  (details: {path})\n"))

    sys.excepthook = log_uncaught
    watch_workflow()
