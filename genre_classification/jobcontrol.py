"""A workflow job stops when the Snakemake process that started it stops.

Snakemake runs a ``script:`` job as ``bash -c "python script.py"``, a child of the Snakemake
process. Ctrl-C in a terminal signals the whole process group, so every job gets SIGINT too;
but a signal to the Snakemake process alone (``kill -INT <pid>``, a wrapper, a scheduler or
``scancel`` of a controller job) ends Snakemake and leaves its jobs running: nothing tells them,
and bash, their parent, lives on waiting for them. A training job would then finish on its own,
after its outputs had been marked incomplete, and remove its checkpoints.

So the workflow names its process in the environment of its jobs (``WORKFLOW_PID_ENV``, set
when the Snakefile is parsed, ``rules/common.smk``), and every job (``runlog.log_to_file``)
watches that process from a daemon thread: when it is gone, the job sends itself SIGTERM.
Most jobs die of it at once; training stops at once too, but never inside an epoch's
checkpoint (``training.train``, ``GracefulStop``), and keeps its checkpoints for the rerun.

Snakemake itself, on SIGINT, cancels and exits but takes seconds to (a short training job
finished meanwhile), and on SIGTERM waits for its running jobs to finish. So the workflow also
installs its own handlers in the Snakemake process (``stop_jobs_on_signals``, ``onstart``): on
either signal it sends SIGTERM to every process below it at once, then interrupts Snakemake as
SIGINT does.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

# The pid of the Snakemake process that runs the jobs (and, in /proc, its start time).
WORKFLOW_PID_ENV = "GENRE_CLASSIFICATION_WORKFLOW_PID"
POLL_S = 1.0


def process_start(pid: int) -> str | None:
    """The start time of a live process (``/proc/<pid>/stat`` field 22), so that a reused pid
    is not taken for it; None when it is gone or a zombie. Without /proc: "alive" or None."""
    stat = Path(f"/proc/{pid}/stat")
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "alive"
    fields = _stat_fields(stat)
    if not fields:
        return None
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start


def _stat_fields(stat: Path) -> list[str]:
    """The fields of a /proc/<pid>/stat after the command name (state, ppid, ...); none for a
    process that is gone."""
    try:
        # the command name (field 2) is in parentheses and may hold spaces
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def workflow_environment() -> dict[str, str]:
    """What the Snakemake process puts in its jobs' environment: its pid and start time."""
    pid = os.getpid()
    return {WORKFLOW_PID_ENV: f"{pid}:{process_start(pid)}"}


def watch_workflow(poll_s: float = POLL_S, sig: int = signal.SIGTERM) -> threading.Thread | None:
    """In a job: send ``sig`` to this process once the Snakemake process named in
    ``WORKFLOW_PID_ENV`` has ended (checked every ``poll_s`` seconds by a daemon thread).
    Nothing outside a workflow job, or in the Snakemake process itself (``run:`` jobs)."""
    value = os.environ.get(WORKFLOW_PID_ENV)
    if not value:
        return None
    pid_text, _, start = value.partition(":")
    pid = int(pid_text)
    if pid == os.getpid():
        return None

    def watch():
        while process_start(pid) == start:
            time.sleep(poll_s)
        log.warning(
            "the Snakemake process %d that started this job has ended: stopping (signal %s)",
            pid, signal.Signals(sig).name,
        )  # fmt: skip
        os.kill(os.getpid(), sig)

    thread = threading.Thread(target=watch, name="watch-workflow", daemon=True)
    thread.start()
    return thread


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), from /proc; none without /proc."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(entry / "stat")
        if fields:
            parents[int(entry.name)] = int(fields[1])
    found, level = [], [pid]
    while level:
        level = [child for child, parent in parents.items() if parent in level]
        found += level
    return found


def stop_jobs_on_signals() -> None:
    """In the Snakemake process (``onstart``, after its scheduler installed its own handlers):
    SIGINT and SIGTERM first send SIGTERM to every process below this one (the jobs, and what
    they started), then interrupt Snakemake as Ctrl-C does (it cancels, marks the running
    jobs' outputs incomplete and exits). Snakemake alone would leave its jobs running on a
    signal to its pid only (``kill -INT``), and on SIGTERM wait for them to finish.
    ``watch_workflow`` in each job covers a Snakemake that dies without running this."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum, frame):
        for pid in descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)


class Interrupted(Exception):
    """The job was asked to stop (SIGTERM, SIGINT) and stopped at a safe point."""


class GracefulStop:
    """SIGTERM and SIGINT as a request to stop at a safe point, as a block.

    Inside ``deferred()`` a signal only sets ``requested`` (the caller checks it with
    ``check()`` where stopping loses nothing, e.g. between batches, after an epoch's
    checkpoint); elsewhere it raises ``Interrupted`` at once. Ctrl-C in a terminal sends a job
    SIGINT and then, from the workflow, SIGTERM: the second signal changes nothing (SIGKILL
    is there for a job that must end now).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested: int | None = None
        self._defer = 0
        self._previous: dict = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.requested = self.requested or signum
        log.warning("received %s", signal.Signals(signum).name)
        if not self._defer:
            raise Interrupted(self.message())

    def message(self) -> str:
        return f"stopped by {signal.Signals(self.requested).name}" if self.requested else ""

    def check(self) -> None:
        if self.requested:
            raise Interrupted(self.message())

    class _Deferred:
        def __init__(self, owner):
            self.owner = owner

        def __enter__(self):
            self.owner._defer += 1

        def __exit__(self, *exc):
            self.owner._defer -= 1

    def deferred(self) -> GracefulStop._Deferred:
        return self._Deferred(self)
