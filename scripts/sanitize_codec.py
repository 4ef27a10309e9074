"""The C Avro codec (streams/contracts/_avroc.c) under AddressSanitizer and UndefinedBehaviorSanitizer.

``scripts/sanitize [--quick]`` runs ``main``: the module is built with the sanitizers into a temporary directory,
then three parts run against that build, each in a child process in the sanitizer environment and each checking
that the build is the module in use: tests/test_avroc.py (its fixture loads the file named by ``AVROC_PREBUILT``),
the C backend of tests/test_fastcodec.py and a fuzz loop. A part fails on a failed test or check, or on any
sanitizer report. ``PYTHONMALLOC=malloc``: pymalloc's arenas hide overflows of PyMem and bytes blocks from ASan;
``-fno-wrapv``: Python's CFLAGS carry ``-fwrapv``, under which UBSan checks no signed overflow. Unseen: accesses made
inside libpython (not instrumented), e.g. PyFloat_Unpack8 on a short buffer. A canary in
tests/test_sanitized_codec.py shows that the environment catches what it should."""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from contextlib import suppress
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = "streams.contracts._avroc"
FILES = [ROOT / "streams" / "contracts" / f for f in ("_avroc.c", "avroc_program.c", "avroc_write.c", "avroc_read.c",
                                                      "avroc.h")]
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-wrapv", "-g", "-O1"]
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", *SANITIZE]
# What each part of the instrumentation leaves in the object: a missing mark means a flag did not take
MARKS = {"asan": b"__asan_report_load", "ubsan": b"__ubsan_handle_", "signed overflow": b"__ubsan_handle_add_overflow"}
REPORT = re.compile(r".*(AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|runtime error:).*")


class SanitizerMissingError(RuntimeError):
    pass


def runtime() -> list[str]:
    """The ASan and UBSan runtime libraries of the gcc that builds the module, to preload (ASan first)."""
    libs = [subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, timeout=60).stdout
            .strip() if shutil.which("gcc") else name for name in ("libasan.so", "libubsan.so")]
    if missing := [lib for lib in libs if not os.path.isabs(lib) or not os.path.exists(lib)]:
        raise SanitizerMissingError(f"no {' or '.join(missing)} (`gcc -print-file-name=...`): install gcc and its "
                                    "sanitizer runtimes (Debian: libasan8, libubsan1)")
    return libs


def sanitizer_env() -> dict[str, str]:
    """abort_on_error, so that faulthandler adds the Python stack (the test, the fuzz step) to a report."""
    return {**os.environ, "LD_PRELOAD": ":".join(runtime()), "PYTHONMALLOC": "malloc", "STREAMS_PURE": "1",
            "PYTHONFAULTHANDLER": "1", "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:abort_on_error=1"}


def build(root: Path, name: str, files: Sequence[Path], flags: Sequence[str] = FLAGS) -> Path:
    """Compile extension ``name`` from ``files`` (.c files and headers) under ``root`` only; return the .so."""
    for f in files:
        shutil.copy(f, root / f.name)
    sources = [f.name for f in files if f.suffix == ".c"]
    script = ("from setuptools import Extension, setup\n"
              "setup(name='sanitized', script_args=['-q', 'build_ext', '--build-lib', 'lib', '--build-temp', 'tmp'],\n"
              f"      ext_modules=[Extension({name!r}, {sources!r}, include_dirs=['.'],\n"
              f"                             extra_compile_args={list(flags)!r}, extra_link_args={SANITIZE[:1]!r})])\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    if proc.returncode:
        raise RuntimeError(f"building {name} failed:\n{proc.stdout}{proc.stderr}")
    *package, last = name.split(".")
    return root.joinpath("lib", *package, last + str(sysconfig.get_config_var("EXT_SUFFIX")))


def run_sanitized(args: Sequence[str], timeout: float = 600) -> tuple[str | None, str]:
    """Run ``python args`` in the sanitizer environment: (why it failed, or None; its stdout and stderr)."""
    try:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=sanitizer_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace", timeout=timeout)
        code, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        code, out = -1, (exc.output or b"").decode(errors="replace") + f"\n(killed after {timeout:.0f} s)"
    report = re.search(r"SUMMARY: \w+Sanitizer.*", out) or REPORT.search(out)  # the one line that says most
    return report.group(0).strip() if report else f"exit status {code}" if code else None, out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(usage="scripts/sanitize [--quick]", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the fastcodec part, fuzz 5 s")
    quick = parser.parse_args(argv).quick
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temporary directory goes too
    try:
        runtime()
    except SanitizerMissingError as exc:
        print(f"sanitize: {exc}")
        return 2
    seconds = 5.0 if quick else float(os.environ.get("FUZZ_SECONDS", "30"))
    tests = os.environ.get("AVROC_TEST_FILE") or str(ROOT / "tests" / "test_avroc.py")
    parts = {"test_avroc": ["avroc", tests], "fastcodec": ["fastcodec", str(ROOT / "tests" / "test_fastcodec.py")],
             "fuzz": ["fuzz", str(seconds), os.environ.get("FUZZ_SEED") or str(random.randrange(2**32))]}
    started, failed = time.monotonic(), []

    def summary(part: str, failure: str | None, since: float, detail: str) -> str:
        failed.extend([part] if failure else [])
        return (f"sanitize: {part:<11} {'FAILED' if failure else 'ok    '} {time.monotonic() - since:5.1f} s  "
                + "; ".join(x for x in (failure, detail) if x))

    with tempfile.TemporaryDirectory(prefix="streams-sanitize-") as tmp:
        so = build(Path(tmp), MODULE, FILES)
        missing = [what for what, mark in MARKS.items() if mark not in so.read_bytes()]
        lines = [summary("build", f"no {', '.join(missing)} instrumentation" if missing else None, started,
                         f"{', '.join(MARKS)}: {so}")]
        for name, args in parts.items() if not missing else ():
            if quick and name == "fastcodec":
                lines.append("sanitize: fastcodec   skipped (--quick)")
                continue
            print(f"== {name}", flush=True)
            t0 = time.monotonic()
            failure, out = run_sanitized([__file__, "_part", str(so), str(Path(tmp) / name), *args], seconds + 900)
            print("".join(f"    {line}\n" for line in out.splitlines()), end="", flush=True)
            result = ([x[9:] for x in out.splitlines() if x.startswith("[result] ")] or [""])[-1]
            lines.append(summary(name, failure or (None if result else "no result line"), t0, result))
    print("\n".join([*lines, f"sanitize: {'FAILED' if failed else 'ok'} in {time.monotonic() - started:.1f} s"]))
    return 1 if failed else 0


# -- in the sanitized child: the test parts -----------------------------------------------------------------------


def preload(so: Path) -> ModuleType:
    """Load the build as streams.contracts._avroc, so every import of that module gets it."""
    spec = importlib.util.spec_from_file_location(MODULE, so)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[MODULE] = module
    return module


class Guard:
    """A pytest plugin: keeps only the C backend's tests (fastcodec) and checks the sanitized build is in use."""

    def __init__(self, so: Path, module: ModuleType | None) -> None:
        self.so, self.module, self.checked, self.counts = so, module, 0, Counter[str]()

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if self.module is not None:
            keep = [i for i in items if getattr(getattr(i, "callspec", None), "params", {}).get("backend") == "c"]
            config.hook.pytest_deselected(items=[i for i in items if i not in keep])
            items[:] = keep

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any]) -> Generator[None, Any, Any]:
        value = yield
        if fixturedef.argname == "avroc":
            used = getattr(value, "__file__", None)
            print(f"\n[check] fixture avroc -> {used}", flush=True)
            if used != str(self.so):
                pytest.exit(f"the tests use {used}, not the sanitized build: their fixture ignores AVROC_PREBUILT", 3)
            self.checked += 1
        return value

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.counts[report.outcome] += 1
        if report.when == "call" and not report.skipped and self.module:  # before the backend fixture's teardown
            self.checked += [self.module] == sys.modules["streams.contracts.fastcodec"]._CODEC


def part_tests(so: Path, basetemp: Path, part: str, target: str) -> int:
    os.environ["AVROC_PREBUILT"] = str(so)  # tests/test_avroc.py's fixture loads this file instead of building
    guard = Guard(so, preload(so) if part == "fastcodec" else None)
    code = pytest.main([target, "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                        str(ROOT), f"--basetemp={basetemp}", "--capture=sys"],  # fd capture: a report dies unseen
                       plugins=[guard])
    ran = guard.counts["passed"] + guard.counts["failed"]
    where = (f"the C backend was the sanitized build in {guard.checked}/{ran} tests" if guard.module else
             f"fixture avroc = the sanitized build: {'yes' if guard.checked else 'no'}")
    print(f"[result] {', '.join(f'{guard.counts[k]} {k}' for k in ('passed', 'failed', 'skipped'))}; {where}")
    return int(code) or (0 if ran and guard.checked == (ran if guard.module else 1) else 3)


# -- in the sanitized child: the fuzz loop ------------------------------------------------------------------------

VARINTS = [-1, -2, 2**31, -(2**31), 2**62, -(2**62), 2**63 - 1, -(2**63), 10**6, 10**6 + 1, -(10**6)]
SubStr, SubInt, SubDict = (type(f"Sub{t.__name__}", (t,), {}) for t in (str, int, dict))
JUNK = (None, True, 0, 1.5, math.nan, 2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 2**1000, 3.5e38, "\ud800", "x\udc80",
        b"x", b"abcd", memoryview(b"abcd"), SubStr("A"), SubInt(3), frozenset({1}), "x" * 70000, b"\0" * 5000, "A",
        range(3), object())


class RefusedError(Exception):
    pass


class Evil:
    """A dict key hashing as a field name: while the writer looks that field up, it meddles with the datum."""

    def __init__(self, name: Any, fuzz: Fuzz, root: Any) -> None:
        self.name, self.fuzz, self.root = name, fuzz, root

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        if (writer := self.fuzz.writing) is not None:  # only mid-write, and not again while meddling
            self.fuzz.writing = None
            self.fuzz.meddle(self.root, writer)
            self.fuzz.writing = writer
        return False


def containers(x: Any, out: dict[int, Any]) -> list[Any]:
    if isinstance(x, (dict, list)) and id(x) not in out:
        out[id(x)] = x
        for v in list(x.values() if isinstance(x, dict) else x):
            containers(v, out)
    return list(out.values())


class Fuzz:
    """Readers on mutated encodings, writers on mutated datums (meddled with mid-write), random programs. Schemas
    and valid datums are tests/test_fastcodec.py's (CASES, Gen): every record of the catalogue, and every shape."""

    def __init__(self, avroc: ModuleType, seed: int) -> None:
        sys.path.insert(0, str(ROOT / "tests"))  # for test_fastcodec, below
        from streams.contracts import fastcodec
        from test_fastcodec import CASES, Gen  # type: ignore[import-not-found]

        self.rng, self.avroc, self.problems = random.Random(seed), avroc, list[str]()
        self.stats, self.raised = Counter[str](), Counter[str]()  # raised: exceptions other than a refusal
        self.codecs: list[tuple[Any, Any, bytes]] = []
        self.writing: Callable[[Any], bytes] | None = None
        self.corpus: list[tuple[int, bytes, Any]] = []
        self.fields: list[str] = []  # field names, for keys that collide with them
        for _, parsed in CASES.values():
            with suppress(fastcodec.UnsupportedError):
                prog, gen = fastcodec.program(parsed), Gen(parsed, self.rng)
                prefix = self.rng.randbytes(self.rng.choice([0, 5, 1500]))
                self.codecs.append((avroc.Writer(prog, prefix, RefusedError), avroc.Reader(prog), prefix))
                self.fields += [f["name"] for s in gen.names.values() for f in s.get("fields", ())]
                for datum in (gen.datum() for _ in range(40)):
                    if (out := self.call(self.codecs[-1][0], datum)) is not None:
                        self.corpus.append((len(self.codecs) - 1, out[len(prefix):], datum))
        self.varints = [avroc.Writer((3,), b"", RefusedError)(n) for n in VARINTS]  # a long, zigzag-encoded

    def junk(self, depth: int = 0) -> Any:
        r = self.rng
        if depth < 3 and r.random() < 0.25:
            items = [self.junk(depth + 1) for _ in range(r.randrange(4))]
            return [items, tuple(items), {str(i): v for i, v in enumerate(items)}, SubDict(a=items)][r.randrange(4)]
        return r.choice([*JUNK, *r.sample(self.fields, 2), [], {}, {1: 2}, {"\ud800": 1}, bytearray(b"ab")])

    def meddle(self, root: Any, writer: Callable[[Any], bytes]) -> None:
        """Mid-write: empty or grow a container of the datum, collect garbage, or write the datum again."""
        c = self.rng.choice(containers(root, {}) or [[]])
        grow = c.extend if isinstance(c, list) else lambda xs: c.update((f"new{i}", x) for i, x in enumerate(xs))
        [c.clear, lambda: grow([self.junk() for _ in range(50)]), gc.collect,
         lambda: self.call(writer, root)][self.rng.randrange(4)]()

    def mutate(self, d: Any) -> Any:
        r, d = self.rng, copy.deepcopy(d)
        for _ in range(r.randint(1, 3)):
            c, op = r.choice(containers(d, {}) or [[]]), r.randrange(7)
            if isinstance(c, dict):
                k = r.choice([*c, *r.sample(self.fields, 2)])
                c.pop(k, None) if op < 3 else c.clear() if op == 3 else None  # a lookup then walks onto an evil key
                c[Evil(k, self, d) if op < 2 else k if op > 3 else r.choice([1, None, b"k", "-type"])] = self.junk()
            elif op < 3:  # a list holding itself, grown, or a record with an evil key
                c.extend([c] if op == 0 else list(c) * 3 if op == 1 else [{Evil(r.choice(self.fields), self, d): 1}])
            elif op == 3 and c:
                del c[r.randrange(len(c))]
            else:
                c.insert(r.randrange(len(c) + 1), self.junk())
        return d

    def mutate_bytes(self, data: bytes) -> bytes:
        r, b = self.rng, bytearray(data)
        for _ in range(r.choice([1, 1, 1, 2, 3])):
            op, i = r.randrange(5), r.randrange(len(b) + 1)
            piece = r.choice([bytes([r.choice([0, 1, 2, 0x7F, 0x80, 0xFF, r.randrange(256)])]), r.randbytes(
                r.randrange(1, 12)), b"\xff" * r.randrange(1, 16) + b"\x01", r.choice(self.varints),
                bytes(b[i:i + r.randrange(1, 20)])])
            if op < 2:
                b[i:i + 1 - op] = piece  # replace a byte, or insert
            elif op == 2:
                del b[i:i + r.randrange(1, 8) if r.random() < 0.7 else len(b)]
            else:
                other = r.choice(self.corpus)[1]
                b[i:] = other[r.randrange(len(other) + 1):]
        return bytes(b)

    def read(self) -> None:
        r, (i, data, _), x = self.rng, self.rng.choice(self.corpus), self.rng.random()
        data = r.randbytes(r.randrange(200)) if x < 0.05 else data[:r.randrange(len(data) + 1)] if x < 0.3 else \
            self.mutate_bytes(data)  # random bytes, a valid encoding cut short, or a mutated one
        buf, x = r.randbytes(skip := r.choice([0, 0, 1, 3, 17])) + data, r.random()
        pos = skip if x < 0.8 else r.randrange(len(buf) + 1) if x < 0.95 else r.choice(
            [-1, len(buf) + 1, 2**63 - 1, -(2**63), 2**70])
        self.stats["read"] += 1
        try:
            value, end = self.codecs[i][1](buf, pos)
        except (ValueError, OverflowError):
            return
        self.stats["read_ok"] += 1
        again = self.codecs[i][1](buf + b"\xaa\x55" * 8, pos)
        if not pos <= end <= len(buf) or again[1] != end or repr(again[0]) != repr(value):
            self.problems.append(f"reader: {buf!r:.200} at {pos} -> {end}, with bytes after the end -> {again[1]}")

    def write(self) -> None:
        i, _, d = self.rng.choice(self.corpus)
        datum, (writer, reader, prefix) = self.mutate(d), self.codecs[i]
        self.stats["write"] += 1
        self.writing = writer
        out, self.writing = self.call(writer, datum), None
        if out is not None:
            self.stats["write_ok"] += 1
            with suppress(ValueError):
                if out.startswith(prefix) and reader(out, len(prefix))[1] == len(out):
                    return
            self.problems.append(f"writer output does not read back to its end: {out!r:.200}")

    def program(self, depth: int = 0) -> Any:
        """A random program, valid or not (streams/contracts/fastcodec.py: the opcodes)."""
        r, op, d = self.rng, self.rng.randrange(16 if depth < 6 else 8), depth + 1
        made: dict[int, Callable[[], Any]] = {
            8: lambda: (8, s := tuple(f"S{i}" for i in range(r.randrange(5))),
                        {**{x: i for i, x in enumerate(s)}, **({"Z": 9} if r.random() < 0.1 else {})}),
            9: lambda: (9, r.choice([0, 1, 4, 16, 2**62, -1, 2**80, "4"])), 10: lambda: (10, self.program(d)),
            11: lambda: (11, self.program(d)),
            13: lambda: (13, k := r.randrange(2), 1 - k if r.random() < 0.95 else k, self.program(d)),
            12: lambda: (12, tuple((f"f{i}", r.random() < 0.5, self.junk(2) if r.random() < 0.3 else None,
                                    self.program(d)) for i in range(r.randrange(4))))}
        if op < 8:
            return (op,) if r.random() < 0.97 else (op, 1)
        return made[op]() if op in made else r.choice([(), (14,), (-1,), ("1",), [7], (2**70,)])

    def programs(self) -> None:
        self.stats["programs"] += 1
        try:
            p = self.program()
            reader, writer = self.avroc.Reader(p), self.avroc.Writer(p, b"\x00", RefusedError)
        except (TypeError, ValueError, OverflowError):
            return
        self.stats["programs_ok"] += 1
        for _ in range(8):  # what the writer wrote past its 1-byte prefix, else random bytes
            out = self.call(writer, self.junk())
            data, pos = (out, 1) if out else (self.rng.randbytes(self.rng.randrange(40)), 0)
            with suppress(ValueError, OverflowError):
                if reader(data, pos)[1] > len(data):
                    self.problems.append(f"reader of {p!r:.100} read past the end of {data!r:.100}")

    def call(self, writer: Callable[[Any], bytes], datum: Any) -> bytes | None:
        """What ``writer`` writes, or None when it raises: refused, or a datum's own code raised (counted)."""
        try:
            return writer(datum)
        except RefusedError:
            return None
        except Exception as exc:
            self.raised[type(exc).__name__] += 1
            if isinstance(exc, SystemError):  # an error returned without an exception set, or the like
                self.problems.append(f"writer: {exc!r}")
            return None


def part_fuzz(so: Path, seconds: float, seed: int) -> int:
    avroc = preload(so)
    print(f"[check] {MODULE} -> {avroc.__file__}; PYTHONMALLOC={os.environ.get('PYTHONMALLOC')}", flush=True)
    fuzz, end, n = Fuzz(avroc, seed), time.monotonic() + seconds, 0
    steps = [fuzz.read] * 5 + [fuzz.write] * 4 + [fuzz.programs]
    while time.monotonic() < end and len(fuzz.problems) < 20:
        fuzz.rng.choice(steps)()
        n += 1
    print("".join(f"[problem] {p}\n" for p in fuzz.problems), end="")
    print(f"[result] {n} iterations, {len(fuzz.codecs)} schemas, FUZZ_SEED={seed}: "
          f"{', '.join(f'{k} {v}' for k, v in sorted(fuzz.stats.items()))}; raised {dict(fuzz.raised)}; "
          f"{len(fuzz.problems)} problems")
    return 1 if fuzz.problems else 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["_part"]:
        sys.exit(main())
    so_path, temp, part, *rest = sys.argv[2:]  # SO BASETEMP avroc|fastcodec TESTFILE, or SO BASETEMP fuzz SECONDS SEED
    sys.exit(part_fuzz(Path(so_path), float(rest[0]), int(rest[1])) if part == "fuzz" else
             part_tests(Path(so_path), Path(temp), part, rest[0]))
