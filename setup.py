"""The build of the compiled hot path: with mypyc and a C compiler, the modules listed in streams/_native.py
become ordinary extension modules of the wheel, and the hand-written C Avro codec beside them (the way black
ships mypyc-compiled wheels). Without either, or with ``STREAMS_PURE_BUILD=1``, the wheel is the pure-Python
package, which runs the same code from source.

Everything else about the package is in pyproject.toml. ``scripts/compile`` uses this same build in place for
a checkout (``build_ext --inplace``, see ``streams._native.build``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _native() -> ModuleType:
    """streams/_native.py, loaded by path: importing ``streams`` would need its dependencies, which a build
    environment does not have. It holds the module lists, so they are written down once."""
    spec = importlib.util.spec_from_file_location("_streams_native_build", HERE / "streams" / "_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = _native()


def _codec() -> list[Extension]:
    return [Extension(m, [f for f in files if f.endswith(".c")], depends=[f for f in files if f.endswith(".h")],
                      extra_compile_args=["-O2"]) for m, files in NATIVE.C_MODULES.items()]


class BuildNative(build_ext):
    """Runs mypyc when the extensions are built, not when this file is imported: the metadata, sdist and
    editable steps import it too, and must neither compile nor fail for want of a compiler. In a wheel build a
    failure leaves the wheel pure (with a warning); in place (``scripts/compile``) it fails, so it is reported."""

    def finalize_options(self) -> None:
        self._pure_reason = self._reason_to_stay_pure()
        if self._pure_reason is None:
            try:
                self.distribution.ext_modules = self._extensions()
            except (Exception, SystemExit) as exc:  # mypyc reports type errors by exiting
                if self.inplace:
                    raise
                self._pure_reason = f"mypyc failed: {exc!r}"
        if self._pure_reason is not None:
            self.distribution.ext_modules = []
        super().finalize_options()

    def _reason_to_stay_pure(self) -> str | None:
        if getattr(self, "editable_mode", False):
            return "an editable install (scripts/compile builds in place, guarded by a manifest)"
        if os.environ.get("STREAMS_PURE_BUILD", "") not in ("", "0"):
            return "STREAMS_PURE_BUILD is set"
        try:
            import mypyc.build  # noqa: F401
        except ImportError:
            return "mypyc (part of mypy) is not installed"
        return None

    def _extensions(self) -> list[Extension]:
        from mypyc.build import mypycify

        paths = [str(NATIVE.source(m).relative_to(HERE)) for m in NATIVE.MODULES]
        target = os.path.join(self.build_temp or "build", "mypyc")
        compiled: list[Extension] = mypycify(paths, opt_level="3", group_name=NATIVE.GROUP, target_dir=target)
        return compiled + _codec()

    def run(self) -> None:
        if self._pure_reason is not None:
            print(f"streams: the hot path stays pure Python ({self._pure_reason})", file=sys.stderr)
            return
        try:
            super().run()
        except Exception as exc:
            if self.inplace:
                raise
            for ext in self.extensions:  # all or none (streams/_native.py says why)
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            print(f"streams: compiling the hot path failed ({exc}); the wheel stays pure Python", file=sys.stderr)
            return
        if not self.inplace:
            # The extensions were built from exactly these sources: the manifest says so, and the import guard
            # then loads them (in place, scripts/compile writes it once it has checked nothing changed).
            manifest = Path(self.build_lib) / "streams" / NATIVE.MANIFEST.name
            manifest.write_text(json.dumps(NATIVE.digests(), indent=1, sort_keys=True) + "\n")


setup(ext_modules=_codec(), cmdclass={"build_ext": BuildNative})
