"""The compiled hot path's guard: compiled modules run only while they match their sources (streams/_native.py).

Each case copies the installed package (sources, extension modules, manifest) and imports it in a fresh
interpreter, so what the guard decides is what Python really loads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import streams
from streams import _native

PROBE = (
    "import sys, streams, streams.runtime.worker, streams.workflow.step; m = sys.modules; "
    "print(streams.__file__); print(streams._native.status()); print(m['streams.runtime.worker'].__file__); "
    "print(m['streams.workflow.step'].__file__); "
    "print('streams.hotpath__mypyc' in sys.modules); "
    "from streams.contracts import fastcodec; print(fastcodec.native_codec() is not None)"
)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of the package as built: ``tmp/streams`` with its ``.py``, ``.so`` and manifest files."""
    if _native.status() != "compiled":
        pytest.fail(f"the compiled hot path is not in use here ({_native.status()}); scripts/test builds it")
    shutil.copytree(Path(streams.__file__).parent, tmp_path / "streams",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def probe(root: Path, **env: str) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k != "STREAMS_PURE"}
    full.update(env, PYTHONPATH=str(root))
    res = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=full, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout.splitlines()
    assert out[0] == str(root / "streams" / "__init__.py"), "the probe imported another copy of streams"
    return out


def test_this_suite_runs_the_compiled_modules() -> None:
    import streams.runtime.worker as worker

    assert _native.status() == "compiled"
    assert worker.__file__ is not None and not worker.__file__.endswith(".py")


def test_fresh_build_loads_extension_modules(package: Path) -> None:
    _, status, worker, step, shared, codec = probe(package)
    assert status == "compiled"
    assert worker.endswith(".so") and step.endswith(".so")
    assert shared == "True" and codec == "True"


def test_edited_source_makes_every_module_load_from_source(package: Path) -> None:
    step = package / "streams" / "workflow" / "step.py"
    step.write_text(step.read_text() + "\n# edited after the build\n")
    _, status, worker, step_file, shared, codec = probe(package)
    assert status.startswith("pure (stale since the build: streams.workflow.step;")
    # all or none: the unchanged worker is not loaded compiled beside a pure step, nor the C codec
    assert worker == str(package / "streams" / "runtime" / "worker.py")
    assert step_file == str(step)
    assert shared == "False" and codec == "False"


def test_edited_c_source_means_sources(package: Path) -> None:
    c = package / "streams" / "contracts" / "_avroc.c"
    c.write_text(c.read_text() + "\n/* edited after the build */\n")
    _, status, worker, _, _, codec = probe(package)
    assert status.startswith("pure (stale since the build: streams.contracts._avroc;")
    assert worker.endswith("worker.py") and codec == "False"


def test_an_extension_left_from_an_unlisted_module_is_ignored(package: Path) -> None:
    # e.g. store.py was compiled once and then dropped from MODULES: its old extension must not load
    assert "streams.state.store" not in _native.MODULES
    state = package / "streams" / "state"
    ext = next(state.glob("entity.*.so"))
    shutil.copy(ext, state / ext.name.replace("entity", "store"))
    full = {k: v for k, v in os.environ.items() if k != "STREAMS_PURE"} | {"PYTHONPATH": str(package)}
    code = "import sys, streams.state.store, streams.state.entity as e; print(streams.state.store.__file__, e.__file__)"
    res = subprocess.run([sys.executable, "-c", code], cwd=package, env=full, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    store, entity = res.stdout.split()
    assert store == str(state / "store.py") and entity.endswith(".so")


def test_streams_pure_forces_sources(package: Path) -> None:
    _, status, worker, _, shared, codec = probe(package, STREAMS_PURE="1")
    assert status == "pure (STREAMS_PURE is set)"
    assert worker.endswith("worker.py") and shared == "False" and codec == "False"


def test_missing_or_foreign_manifest_means_sources(package: Path) -> None:
    manifest = package / "streams" / "_native.json"
    built = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**built, "python": "cpython-00-elsewhere"}))
    _, status, worker, *_ = probe(package)
    assert status.startswith("pure (stale since the build: python;") and worker.endswith(".py")
    manifest.unlink()
    _, status, worker, *_ = probe(package)
    assert status == "pure (not built: scripts/compile)" and worker.endswith(".py")


def test_a_missing_extension_module_means_sources(package: Path) -> None:
    next((package / "streams" / "workflow").glob("step.*.so")).unlink()
    _, status, worker, step, *_ = probe(package)
    assert status.startswith("pure (extension modules missing: streams.workflow.step;")
    assert worker.endswith("worker.py") and step.endswith("step.py")
    next((package / "streams" / "contracts").glob("_avroc.*.so")).unlink()
    _, status, *_ = probe(package)
    assert status.startswith("pure (extension modules missing: streams.workflow.step, streams.contracts._avroc;")


def test_streams_pure_does_not_make_the_build_look_stale(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # scripts/_venv.sh runs `build --quiet` before every command: a user's STREAMS_PURE=1 must not rebuild
    before = _native.MANIFEST.stat().st_mtime_ns
    monkeypatch.setenv("STREAMS_PURE", "1")
    assert _native.main(["build", "--quiet"]) == 0
    assert capsys.readouterr().out == "" and _native.MANIFEST.stat().st_mtime_ns == before


def test_manifest_lists_every_compiled_source() -> None:
    assert set(_native.digests()) == {*_native.MODULES, *_native.C_MODULES, "python"}
    assert all(_native.source(m).is_file() for m in _native.MODULES)
    assert all((_native.ROOT / f).is_file() for files in _native.C_MODULES.values() for f in files)


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _native.main(["bild"]) == 2
    assert capsys.readouterr().err.startswith("usage: scripts/compile")
