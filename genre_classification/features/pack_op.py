"""The native pack reader: ``pack_read.cc``, a TensorFlow op that reads rows of the shards'
packs (``features.packs``) inside ``tf.data``'s threads, without Python or the GIL (3x the
Python reader, about the in-memory path's rate: README, benchmarks/bench_loader.py).

The op is compiled against the installed TensorFlow (``tf.sysconfig``) on first use, with
``$CXX`` (default ``g++``), into ``ops_dir()``: one library per (source, TensorFlow version,
flags), written atomically, so parallel jobs on shared storage build it at most once each and
never load a half-written one. ``make install`` and the container build it ahead. Where it
cannot be built or loaded (no C++ compiler), training reads packs in Python
(``packs.PackReader``) with the same batches, and says so once.

Environment: ``GENRE_CLASSIFICATION_OPS_DIR`` (where built ops live; default
``$XDG_CACHE_HOME/genre-classification/ops``), ``GENRE_CLASSIFICATION_PACK_READER=python``
(never use the op).

    python -m genre_classification.features.pack_op   # build (or find) it and print its path
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("pack_read.cc")
OPS_DIR_ENV = "GENRE_CLASSIFICATION_OPS_DIR"
READER_ENV = "GENRE_CLASSIFICATION_PACK_READER"


class BuildError(RuntimeError):
    pass


def ops_dir() -> Path:
    if os.environ.get(OPS_DIR_ENV):
        return Path(os.environ[OPS_DIR_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "genre-classification" / "ops"


def _command(output: Path) -> list[str]:
    import tensorflow as tf

    compiler = shlex.split(os.environ.get("CXX") or "g++")
    return [
        *compiler, "-shared", "-fPIC", "-O2", "-Wno-deprecated-declarations", str(SOURCE),
        "-o", str(output), *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags(),
    ]  # fmt: skip


def library_path() -> Path:
    """Where the op built from this source for this TensorFlow lives (built or not)."""
    import tensorflow as tf

    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(" ".join([tf.__version__, *_command(Path("out"))]).encode())
    return ops_dir() / f"pack_read-{key.hexdigest()[:16]}.so"


def build() -> Path:
    """The op's library, compiled first if it is not there yet. Raises ``BuildError`` with
    the compiler's message when it cannot be compiled."""
    target = library_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".building-", suffix=".so")
    os.close(fd)
    command = _command(Path(tmp))
    log.info("building the native pack reader: %s", shlex.join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError as error:
        Path(tmp).unlink(missing_ok=True)
        raise BuildError(f"no C++ compiler ({error.filename}): install g++ or set CXX") from None
    if done.returncode:
        Path(tmp).unlink(missing_ok=True)
        raise BuildError(f"{shlex.join(command)} failed:\n{done.stderr.strip()[-2000:]}")
    os.replace(tmp, target)
    return target


@functools.cache
def load():
    """The loaded op library (``.pack_read``), or ``None`` (with one warning saying why and
    what to do) when it is switched off, cannot be built or cannot be loaded."""
    if os.environ.get(READER_ENV, "native") == "python":
        log.info("%s=python: packs are read in Python", READER_ENV)
        return None
    import tensorflow as tf

    try:
        path = build()
        library = tf.load_op_library(str(path))
    except (BuildError, OSError, tf.errors.NotFoundError) as error:
        log.warning(
            "the native pack reader is not available (%s); packs are read in Python, the same "
            "batches about 3x slower. Install g++ (apt-get install g++) to use it.",
            error,
        )
        return None
    log.info("packs are read by the native reader %s", path)
    return library


def reader(pack_reader):
    """``read(packs, rows)`` -> float32 tensor ``(n, *segment_shape)``: the rows of
    ``pack_reader``'s packs (``packs.PackReader``) by the op, in graph mode; ``None`` where the
    op is not available."""
    library = load()
    if library is None or pack_reader.segment_shape is None:
        return None
    attrs = {
        "paths": [str(path) for path in pack_reader.paths],
        "offsets": list(pack_reader.offsets),
        "segment_shape": list(pack_reader.segment_shape),
    }
    return functools.partial(library.pack_read, **attrs)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(build())
    except BuildError as error:
        sys.exit(f"native pack reader not built: {error}")
