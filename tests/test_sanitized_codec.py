"""scripts/sanitize: the C Avro codec under AddressSanitizer and UndefinedBehaviorSanitizer (scripts/sanitize_codec.py).

The quick run must be clean; and a canary extension, built and run by the same helpers with the same flags and
environment, must be caught: without ``PYTHONMALLOC=malloc`` ASan would miss the PyMem overflow, without
``-fno-wrapv`` UBSan the signed overflow. A machine without the sanitizer runtimes fails here; it does not skip."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sanitize_codec.py"
CANARY = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>

/* One byte past a 16-byte PyMem block: inside a pymalloc pool unless PYTHONMALLOC=malloc. */
static PyObject *heap_over(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    char *p = PyMem_Malloc(16);
    volatile char c = p[16];
    PyMem_Free(p);
    return PyLong_FromLong(c);
}

/* One byte past a bytes object (its data ends with a NUL at [size]). */
static PyObject *bytes_over(PyObject *self, PyObject *b) {
    (void)self;
    volatile char c = PyBytes_AS_STRING(b)[PyBytes_GET_SIZE(b) + 1];
    return PyLong_FromLong(c);
}

/* Signed overflow: undefined, and checked by UBSan only without -fwrapv. */
static PyObject *sovf(PyObject *self, PyObject *arg) {
    (void)self;
    volatile int x = (int)PyLong_AsLong(arg);
    return PyLong_FromLong(x + INT_MAX);
}

static PyMethodDef methods[] = {
    {"heap_over", heap_over, METH_NOARGS, NULL}, {"bytes_over", bytes_over, METH_O, NULL},
    {"sovf", sovf, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, .m_name = "canary", .m_size = -1, .m_methods = methods};
PyMODINIT_FUNC PyInit_canary(void) { return PyModule_Create(&def); }
"""


def load_helpers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sanitize_codec", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


san = load_helpers()


def require_runtime() -> None:
    """Fail (in the test, not its setup) where the sanitizer runtimes are missing: never skip."""
    try:
        san.runtime()
    except san.SanitizerMissingError as exc:
        pytest.fail(f"the sanitizer check cannot run here: {exc}")


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The canary extension, built by the script's own helper with the script's own flags."""
    src, root = tmp_path_factory.mktemp("canary_src"), tmp_path_factory.mktemp("canary")
    (src / "canary.c").write_text(CANARY)
    so: Path = san.build(root, "canary", [src / "canary.c"])
    assert all(mark in so.read_bytes() for mark in san.MARKS.values()), "the flags did not take"
    return so


@pytest.mark.parametrize(("call", "report"), [
    ("heap_over()", "AddressSanitizer: heap-buffer-overflow"),
    ("bytes_over(b'abc')", "AddressSanitizer: heap-buffer-overflow"),
    ("sovf(1)", "runtime error: signed integer overflow"),
])
def test_the_harness_catches_the_canary(request: pytest.FixtureRequest, call: str, report: str) -> None:
    require_runtime()
    canary: Path = request.getfixturevalue("canary")
    code = f"import sys; sys.path.insert(0, {str(canary.parent)!r}); import canary; canary.{call}; print('missed')"
    failure, out = san.run_sanitized(["-c", code], timeout=120)
    assert failure is not None and report in out, f"the sanitizer did not report {report!r}:\n{out}"
    assert "missed" not in out, "the run went on past the report (halt_on_error)"


def test_quick_sanitized_run_is_clean() -> None:
    """``scripts/sanitize --quick``: tests/test_avroc.py and 5 s of fuzzing against the sanitized build."""
    require_runtime()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--quick"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script removes its temporary directory on SIGTERM
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"scripts/sanitize --quick took over 240 s:\n{out[-4000:]}")
    assert "AddressSanitizer" not in out and "runtime error:" not in out, out[-8000:]
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{out[-8000:]}"
    parts = {w[1]: w[2] for line in out.splitlines() if line.startswith("sanitize: ") and len(w := line.split()) > 2}
    assert parts.get("test_avroc") == parts.get("fuzz") == "ok", out[-3000:]
