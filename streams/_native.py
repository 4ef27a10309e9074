"""The compiled hot path: the per-record modules built with mypyc, used only while they match their sources.

Why compile: a workflow step is ~60-80 us of interpreted Python, and the orchestrator is CPU-bound on it.
mypyc turns these modules, unchanged (they are already ``mypy --strict``), into C extensions: about 30% more
steps/s in the bench's throughput phase. Nothing else changes: the same source is the pure-Python fallback.
The same build compiles the one hand-written C module, the Avro codec (``C_MODULES``), under the same guard.

Two ways to get them, one build (``setup.py``): a wheel (``python -m build``, ``pip install .``) carries them as
ordinary extension modules, or pure Python where the build had no mypyc or C compiler; a checkout, installed
editable, gets them in place from ``scripts/compile`` (run by ``scripts/_venv.sh``, so by both README commands)
whenever the manifest is stale. Without mypy or a compiler that says so in one line and leaves the package pure.

Why the guard: in a checkout the extension modules sit beside their sources, and Python prefers an extension
module to a ``.py`` file, so an edited source would silently not run. The build writes a manifest with the
digest of every compiled source; at ``import streams`` any difference, a missing manifest or ``STREAMS_PURE=1``
makes every listed module load from its source. All or none: compiled modules call each other's native classes
directly, so one compiled module beside a pure one would refuse its arguments. A wheel's build writes the
manifest of the sources it ships, so there the guard passes by construction (and still catches a hand edit).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The modules every record goes through (profiled), and nothing that is monkeypatched, introspected or run
# once. Their classes cannot be subclassed by interpreted code (mypyc refuses), so user code plugs in through
# the Processor protocol (streams/runtime/processor.py, not compiled), never by subclassing these.
# The group's shared library becomes ``streams/hotpath__mypyc*.so``.
MODULES = (
    "streams.records",
    "streams.contracts.serde",
    "streams.contracts.fastcodec",
    "streams.state.entity",
    "streams.state.timers",
    "streams.runtime.worker",
    "streams.runtime.handler",
    "streams.runtime.parked",
    "streams.runtime.stats",
    "streams.runtime.ingest",
    "streams.kafka.partition",
    "streams.kafka.io",
    "streams.runtime.commit",
    "streams.runtime.due",
    "streams.runtime.tracing",
    "streams.runtime.parking",
    "streams.workflow.step",
    "streams.workflow.actions",
    "streams.workflow.context",
    "streams.workflow.model",
    "streams.workflow.dsl",
    "streams.workflow.retry",
    "streams.processors.workflow",
    "streams.processors.services",
)
GROUP = "streams.hotpath"
# Hand-written C built alongside (module -> its files; headers are digested, not compiled): the Avro codec
# (streams/contracts/fastcodec.py says why).
C_MODULES = {"streams.contracts._avroc": tuple(f"streams/contracts/{f}" for f in (
    "_avroc.c", "avroc_program.c", "avroc_write.c", "avroc_read.c", "avroc.h"))}
ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "streams" / "_native.json"


def source(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def digests() -> dict[str, str]:
    """What the compiled modules were (or would be) built from: each source, and the interpreter."""
    out = {m: hashlib.sha256(source(m).read_bytes()).hexdigest() for m in MODULES}
    out.update({m: hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in files)).hexdigest()
                for m, files in C_MODULES.items()})
    out["python"] = sys.implementation.cache_tag + "-" + sys.platform
    return out


def status() -> str:
    """``compiled``, or ``pure (<why>)``: what ``import streams`` decided for this process."""
    return _DECIDED["status"]


def _decide() -> str:
    if os.environ.get("STREAMS_PURE", "") not in ("", "0"):
        return "pure (STREAMS_PURE is set)"
    why = _unusable()
    return "compiled" if why is None else f"pure ({why})"


def _extension(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + str(sysconfig.get_config_var("EXT_SUFFIX")))


def _unusable() -> str | None:
    """Why the built extension modules do not match this tree and interpreter, or None when they do."""
    try:
        built = json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return "not built: scripts/compile"
    except (OSError, ValueError) as exc:
        return f"unreadable {MANIFEST.name}: {exc}"
    try:
        now = digests()
    except OSError as exc:
        return f"cannot read a compiled module's source: {exc}"
    stale = sorted(k for k in {*now, *built} if built.get(k) != now.get(k))
    if stale:
        return f"stale since the build: {', '.join(stale)}; rebuild: scripts/compile"
    missing = [m for m in (*MODULES, *C_MODULES, GROUP + "__mypyc") if not _extension(m).is_file()]
    if missing:
        return f"extension modules missing: {', '.join(missing)}; rebuild: scripts/compile build --force"
    return None


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Loads modules of the package from their ``.py`` files even where an extension module sits beside them:
    every module when pure, the unlisted ones when compiled (an extension left from a module since dropped
    from MODULES would otherwise load against a shared library that no longer has it)."""

    def __init__(self, compiled: frozenset[str]) -> None:
        self.compiled = compiled

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("streams.") or fullname in self.compiled:
            return None
        file = source(fullname)
        return importlib.util.spec_from_file_location(fullname, file) if file.is_file() else None


def install_guard() -> None:
    """Called once by ``streams/__init__``, before any listed module is imported."""
    _DECIDED["status"] = decided = _decide()
    if not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst(frozenset(MODULES) if decided == "compiled" else frozenset()))


_DECIDED = {"status": "pure (guard not run)"}

def _built_files() -> list[Path]:
    """Every extension module in the package: all are ours, including any of a module since dropped from
    MODULES (it would otherwise load against a shared library that no longer has it)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [p for p in (ROOT / "streams").rglob("*") if p.name.endswith(suffixes)]


def clean() -> None:
    MANIFEST.unlink(missing_ok=True)
    for p in _built_files():
        p.unlink()


def build() -> str:
    """Compile the hot path; returns one line saying what happened."""
    setup = ROOT / "setup.py"
    if not setup.is_file():  # an installed wheel: its extensions came with it, and stay
        return f"streams: {setup} is missing (not a checkout); the hot path stays as installed"
    clean()
    try:
        import mypyc  # noqa: F401  (only to say clearly that it is missing)
    except ImportError:
        return "streams: mypyc (part of mypy) is not installed; the hot path stays pure Python"
    want = digests()
    with tempfile.TemporaryDirectory(prefix="streams-mypyc-") as tmp:
        env = {**os.environ, "MYPYC_OPT_LEVEL": "3"}
        proc = subprocess.run(
            [sys.executable, str(setup), "build_ext", "--inplace",
             "--build-temp", str(Path(tmp) / "temp"), "--build-lib", str(Path(tmp) / "lib")],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            clean()
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            return f"streams: compiling the hot path failed ({last}); it stays pure Python"
    if want != digests():
        clean()
        return "streams: a source changed while compiling; the hot path stays pure Python (build again)"
    MANIFEST.write_text(json.dumps(want, indent=1, sort_keys=True) + "\n")
    return f"streams: compiled {len(MODULES)} hot-path modules with mypyc, and the C Avro codec"


def main(argv: Sequence[str]) -> int:
    """``build [--force] [--quiet]`` (quiet: say nothing when up to date), ``clean``, ``status``."""
    args = list(argv)
    if args and args[0] == "build" and set(args[1:]) <= {"--force", "--quiet"}:
        if "--force" not in args and _unusable() is None:  # whatever STREAMS_PURE says for this process
            if "--quiet" not in args:
                print("streams: compiled hot path is up to date")
            return 0
        print(build())
        return 0
    if args == ["clean"]:
        clean()
        print("streams: compiled hot path removed; pure Python from now on")
        return 0
    if args == ["status"]:
        print(_decide())
        return 0
    print("usage: scripts/compile [build [--force] | clean | status]", file=sys.stderr)
    return 2
