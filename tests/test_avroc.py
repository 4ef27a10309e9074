"""The C Avro codec (streams/contracts/_avroc.c) on its own, against fastavro: the writer's bytes are fastavro's or
it refuses; the reader's datums are fastavro's, and on malformed or hostile bytes it raises, never crashes, never
allocates what the input cannot back, and leaks no references. The module is built into a temporary directory
once per session, with warnings as errors."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import time
import tracemalloc
from contextlib import suppress
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

SOURCE_DIR = Path(__file__).resolve().parents[1] / "streams" / "contracts"
SOURCES = ["_avroc.c", "avroc_program.c", "avroc_write.c", "avroc_read.c"]
HEADERS = ["avroc.h"]
FLAGS = ["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror"]
PRIMS = {"null": 0, "boolean": 1, "int": 2, "long": 3, "float": 4, "double": 5, "bytes": 6, "string": 7}
NOW = 1767225600123


class RefusedError(Exception):
    pass


class MyInt(int):
    pass


class MyStr(str):
    __slots__ = ()


class MyDict(dict[str, Any]):
    pass


def build(root: Path) -> ModuleType:
    """Compile the module under ``root`` (nothing is written elsewhere) and load it."""
    for name in SOURCES + HEADERS:
        shutil.copy(SOURCE_DIR / name, root / name)
    script = ("from setuptools import Extension, setup\n"
              "setup(name='avroc_test', script_args=['-q', 'build_ext', '--build-lib', 'lib', '--build-temp', 'tmp'],\n"
              f"      ext_modules=[Extension('streams.contracts._avroc', {SOURCES!r}, include_dirs=['.'],\n"
              f"                             depends={HEADERS!r}, extra_compile_args={FLAGS!r})])\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return load(root / "lib" / "streams" / "contracts" / f"_avroc{sysconfig.get_config_var('EXT_SUFFIX')}")


def load(so: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("streams.contracts._avroc", so)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def avroc(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    prebuilt = os.environ.get("AVROC_PREBUILT")  # a module built elsewhere, used as is (scripts/sanitize: ASan+UBSan)
    return load(Path(prebuilt)) if prebuilt else build(tmp_path_factory.mktemp("avroc"))


def program(s: Any) -> tuple[Any, ...]:
    """The program for a plain (inlined) schema, as the caller builds it."""
    if isinstance(s, str):
        return (PRIMS[s],)
    if isinstance(s, list):
        i = s.index("null")
        return (13, i, 1 - i, program(s[1 - i]))
    t = s["type"]
    if t in PRIMS:
        return (PRIMS[t],)
    if t == "enum":
        return (8, tuple(s["symbols"]), {x: i for i, x in enumerate(s["symbols"])})
    if t == "fixed":
        return (9, s["size"])
    if t in ("array", "map"):
        return (10 if t == "array" else 11, program(s["items" if t == "array" else "values"]))
    return (12, tuple((f["name"], not ("default" in f or (isinstance(f["type"], list) and "null" in f["type"])),
                       f.get("default"), program(f["type"])) for f in s["fields"]))


def fa_write(schema: Any, datum: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), datum)
    return out.getvalue()


def fa_read(schema: Any, data: bytes) -> Any:
    return schemaless_reader(io.BytesIO(data), parse_schema(schema), None)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN, -0.0 distinct from 0.0, exact types and dict order."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def rec(name: str, *fields: tuple[Any, ...]) -> dict[str, Any]:
    return {"type": "record", "name": name,
            "fields": [{"name": f[0], "type": f[1], **({"default": f[2]} if len(f) > 2 else {})} for f in fields]}


ENUM = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}
BIG_ENUM = {"type": "enum", "name": "Big", "symbols": [f"S{i}" for i in range(70)]}
FIXED = {"type": "fixed", "name": "F4", "size": 4}
ITEM = rec("Item", ("sku", "string"), ("qty", "int"), ("price", "long"))
NOTE = rec("Note", ("at", "long"), ("text", ["null", "string"], None))
ALL = rec("All", ("n", "null"), ("b", "boolean"), ("i", "int"), ("l", "long"), ("f", "float"), ("d", "double"),
          ("by", "bytes"), ("s", "string"), ("e", ENUM), ("fx", FIXED), ("items", {"type": "array", "items": ITEM}),
          ("m", {"type": "map", "values": "long"}), ("u1", ["null", "string"], None), ("u2", ["long", "null"]),
          ("note", ["null", NOTE], None), ("opt", "int", 42),
          ("nested", {"type": "map", "values": {"type": "array", "items": ["double", "null"]}}))
ALL_DATUM = {"n": None, "b": True, "i": -2**31, "l": NOW, "f": 1.5, "d": -0.0, "by": b"\x00\xff", "s": "日本😀",
             "e": "C", "fx": b"abcd", "items": [{"sku": "SKU-1", "qty": 2, "price": 19900}, {"sku": "", "qty": -1,
             "price": 2**63 - 1}], "m": {"a": 1, "é": -1}, "u1": "x", "u2": None, "note": {"at": NOW, "text": None},
             "nested": {"k": [1.0, None, math.inf], "z": []}, "extra": "ignored"}
INTS = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8193, 2**31 - 1, -2**31]
FLOATS = [0.0, -0.0, 0.1, 1.5, math.inf, -math.inf, math.nan, 3.4028234663852886e38, 1e-45, 3, -7, 2**60]
CASES: list[tuple[Any, list[Any]]] = [
    ("null", [None]),
    ("boolean", [True, False]),
    ("int", INTS),
    ("long", [*INTS, 2**31, -2**31 - 1, 2**63 - 1, -2**63, NOW]),
    ("float", FLOATS),
    ("double", [*FLOATS, 1.7976931348623157e308, 5e-324, 2**70]),
    ("bytes", [b"", b"\x00", bytes(range(256)) * 3]),
    ("string", ["", "a", "é", "日本", "😀", "\x00", "x" * 3000]),
    (ENUM, ["A", "B", "C"]),
    (BIG_ENUM, ["S0", "S63", "S64", "S69"]),
    (FIXED, [b"abcd", b"\x00\x00\x00\x00"]),
    ({"type": "array", "items": "int"}, [[], [1], list(range(-100, 100)), (1, 2, 3)]),
    ({"type": "array", "items": "null"}, [[], [None, None]]),
    ({"type": "map", "values": "string"}, [{}, {"a": "x", "é": "日本"}, {str(i): str(i) for i in range(100)}]),
    ({"type": "map", "values": {"type": "array", "items": {"type": "map", "values": "boolean"}}},
     [{"a": [{}, {"b": True}]}]),
    (["null", "string"], [None, "", "x"]),
    (["long", "null"], [None, 0, -1, 2**63 - 1]),
    (["null", {"type": "array", "items": "int"}], [None, [], [1, 2]]),
    ([{"type": "map", "values": "int"}, "null"], [None, {}, {"a": 1}]),
    (["null", ITEM], [None, {"sku": "s", "qty": 1, "price": 2}]),
    (rec("Empty"), [{}]),
    (rec("D", ("a", "long", 5), ("b", ["null", "string"]), ("c", ["string", "null"], "dflt")),
     [{}, {"a": 1, "b": "x"}]),
    (ALL, [ALL_DATUM, {**ALL_DATUM, "items": [], "m": {}, "u1": None, "u2": 7, "note": None, "opt": 0, "b": False}]),
]


@pytest.mark.parametrize(("schema", "datums"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_same_bytes_and_datums_as_fastavro(avroc: ModuleType, schema: Any, datums: list[Any]) -> None:
    writer, reader = avroc.Writer(program(schema), b"\x00\x01", RefusedError), avroc.Reader(program(schema))
    for datum in datums:
        expected = fa_write(schema, datum)
        assert writer(datum) == b"\x00\x01" + expected, datum
        value, end = reader(expected, 0)
        assert end == len(expected) and same(value, fa_read(schema, expected)), datum
        value, end = reader(b"junk" + expected + b"more", 4)
        assert end == 4 + len(expected) and same(value, fa_read(schema, expected)), datum


REFUSALS: list[tuple[Any, Any]] = [
    ("null", 0), ("null", False), ("boolean", 1), ("boolean", None), ("int", True), ("int", 2**31), ("int", -2**31 - 1),
    ("int", 1.0), ("int", "1"), ("int", MyInt(1)), ("long", 2**63), ("long", -2**63 - 1), ("long", False),
    ("float", "1.0"), ("float", 3.5e38), ("float", 2**1024), ("float", True), ("double", 2**1024), ("double", None),
    ("bytes", "x"), ("bytes", bytearray(b"x")), ("bytes", memoryview(b"x")), ("string", b"x"), ("string", MyStr("x")),
    ("string", "\ud800"), ("string", 1), (ENUM, "D"), (ENUM, b"A"), (ENUM, MyStr("A")), (FIXED, b"abc"),
    (FIXED, b"abcde"), (FIXED, bytearray(4)), (FIXED, "abcd"), ({"type": "array", "items": "int"}, {1: 2}),
    ({"type": "array", "items": "int"}, "ab"), ({"type": "array", "items": "int"}, [1, "x"]),
    ({"type": "array", "items": "int"}, {1, 2}), ({"type": "map", "values": "int"}, {1: 1}),
    ({"type": "map", "values": "int"}, MyDict(a=1)), ({"type": "map", "values": "int"}, [("a", 1)]),
    ({"type": "map", "values": "int"}, {"\udc80": 1}), (ITEM, {"sku": "s", "qty": 1}),
    (ITEM, MyDict(sku="s", qty=1, price=2)),
    (ITEM, None), (["null", "string"], ("string", "x")), (["null", {"type": "map", "values": "int"}], {"-type": 1}),
    (["null", ITEM], {"-type": "Item", "sku": "s", "qty": 1, "price": 2}), (["null", "long"], MyInt(3)),
    (ALL, {**ALL_DATUM, "opt": 2**40}),
]


@pytest.mark.parametrize(("schema", "datum"), REFUSALS, ids=[str(i) for i in range(len(REFUSALS))])
def test_refuses_what_it_does_not_encode_exactly(avroc: ModuleType, schema: Any, datum: Any) -> None:
    with pytest.raises(RefusedError, match=r"\w"):
        avroc.Writer(program(schema), b"", RefusedError)(datum)


def test_truncated_and_mutated_input_raises_or_agrees_with_fastavro(avroc: ModuleType) -> None:
    reader = avroc.Reader(program(ALL))
    data = fa_write(ALL, ALL_DATUM)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            reader(data[:cut], 0)
    rng = random.Random(20240601)
    decoded = 0
    for _ in range(3000):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            bad[rng.randrange(len(bad))] = rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        try:
            value, end = reader(bytes(bad), 0)
        except ValueError:
            continue
        decoded += 1
        assert end <= len(bad) and same(value, fa_read(ALL, bytes(bad)))
    assert decoded > 100


def zz(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    return bytes([*out, z])


LONGS = {"type": "array", "items": "long"}
MALFORMED: list[tuple[Any, bytes]] = [
    ("long", b""), ("long", b"\x80"), ("long", b"\xff" * 10 + b"\x01"), ("long", b"\xff" * 9 + b"\x02"),
    ("long", b"\x80" * 20), ("int", b"\xff" * 9 + b"\x03"), ("string", b"\x01"), ("string", b"\x04a"),
    ("string", b"\x02\xff"), ("string", b"\x04\xed\xa0"), ("string", b"\x06\xed\xa0\x80"), ("bytes", b"\x01"),
    ("bytes", b"\x06ab"), ("bytes", zz(2**62)), (ENUM, b"\x06"), (ENUM, b"\x01"), (["null", "string"], b"\x04"),
    (["null", "string"], b"\x01"), ("boolean", b"\x02"), ("boolean", b"\xff"), ("boolean", b""), ("float", b"\0" * 3),
    ("double", b"\0" * 7), (FIXED, b"abc"), (LONGS, zz(2**40) + b"\x02\x02\x02"), (LONGS, zz(-2**40) + b"\x02\x02\x02"),
    (LONGS, zz(-2**63) + b"\x02\x02\x02"), (LONGS, zz(2**63 - 1)), (LONGS, zz(4) + b"\x02\x02\x02"),
    ({"type": "map", "values": "null"}, zz(2**40) + b"\x02a\x02a"),
    ({"type": "array", "items": FIXED}, zz(3) + b"x" * 11),
    ({"type": "array", "items": "null"}, zz(10**6 + 1) + b"\0"), ({"type": "array", "items": rec("Empty")}, zz(2**40)),
    ({"type": "array", "items": {"type": "array", "items": "null"}}, zz(2) + (zz(600_000) + b"\0") * 2 + b"\0"),
    ({"type": "array", "items": "null"}, zz(-(2**62)) + zz(1)), (LONGS, b"\x02\x02"), (LONGS, zz(-1) + b"\x80"),
]


@pytest.mark.parametrize(("schema", "data"), MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_and_hostile_input_raises_quickly(avroc: ModuleType, schema: Any, data: bytes) -> None:
    reader = avroc.Reader(program(schema))
    started = time.perf_counter()
    with pytest.raises(ValueError):
        reader(data, 0)
    assert time.perf_counter() - started < 0.5


def test_edge_varints_and_counts_that_are_valid(avroc: ModuleType) -> None:
    assert avroc.Reader(program("long"))(b"\xff" * 9 + b"\x01", 0) == (-2**63, 10)
    assert avroc.Reader(program("int"))(zz(2**40), 0) == (2**40, 6)  # like fastavro: an int is not range-checked
    nulls = avroc.Reader(program({"type": "array", "items": "null"}))(zz(10**6) + b"\0", 0)
    assert nulls == ([None] * 10**6, len(zz(10**6)) + 1)
    assert avroc.Reader(program("null"))(b"", 0) == (None, 0)


def test_negative_blocks_with_byte_sizes(avroc: ModuleType) -> None:
    array = zz(-2) + zz(2) + zz(5) + zz(6) + zz(-1) + zz(1) + zz(-7) + zz(2) + zz(1) + zz(8) + b"\0"
    assert avroc.Reader(program(LONGS))(array, 0) == ([5, 6, -7, 1, 8], len(array))
    assert fa_read(LONGS, array) == [5, 6, -7, 1, 8]
    schema = {"type": "map", "values": "string"}
    m = zz(-1) + zz(4) + b"\x02a\x02x" + zz(2) + b"\x02b\x02y\x02a\x02z" + b"\0"
    assert avroc.Reader(program(schema))(m, 0) == ({"a": "z", "b": "y"}, len(m)) == (fa_read(schema, m), len(m))


def test_call_and_construction_arguments(avroc: ModuleType) -> None:
    reader, writer = avroc.Reader((7,)), avroc.Writer((7,), b"", RefusedError)
    for args in [(bytearray(b"\0"), 0), (memoryview(b"\0"), 0), ("", 0), (b"\0", "0"), (b"\0", 0.0), (b"\0",), ()]:
        with pytest.raises(TypeError):
            reader(*args)
    for pos in (-1, 2, 2**70):
        with pytest.raises((ValueError, OverflowError)):
            reader(b"\0", pos)
    with pytest.raises(TypeError):
        reader(data=b"\0", pos=0)
    for wargs in [(), ("a", "b")]:
        with pytest.raises(TypeError):
            writer(*wargs)
    with pytest.raises(TypeError):
        writer(datum="a")
    for bad in [((7,), bytearray(), RefusedError), ((7,), b"", 3), ((7,), b"", RefusedError()), ((7,), "", None)]:
        with pytest.raises(TypeError):
            avroc.Writer(*bad)
    assert writer("é") == b"\x04\xc3\xa9" and reader(b"\x04\xc3\xa9", 0) == ("é", 3)


BAD_PROGRAMS: list[Any] = [
    (), 7, [7], ("7",), (-1,), (14,), (2**70,), (7, 1), (8, ("A",)), (8, ("A", "B"), {"A": 0}),
    (8, ("A", "A"), {"A": 1}),
    (8, ("A", 1), {"A": 0, 1: 1}), (8, ["A"], {"A": 0}), (8, ("A",), {"A": 1}), (9, -1), (9, "4"), (10,), (10, (99,)),
    (11, 7), (12, [("a", True, None, (7,))]), (12, (("a", True, None),)), (12, ((b"a", True, None, (7,)),)),
    (12, (("a", True, None, (7,)), ("b", True, None, (15,)))), (13, 0, 0, (7,)), (13, 0, 2, (7,)), (13, 0, 1, (0,)),
    (13, 1, 0, (13, 0, 1, (7,))), (13, 0, 1), (10, (10, (10, (7, 7)))),
]


@pytest.mark.parametrize("prog", BAD_PROGRAMS, ids=[str(i) for i in range(len(BAD_PROGRAMS))])
def test_malformed_programs_are_rejected_at_construction(avroc: ModuleType, prog: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        avroc.Reader(prog)
    with pytest.raises((TypeError, ValueError)):
        avroc.Writer(prog, b"", RefusedError)


def test_deep_programs(avroc: ModuleType) -> None:
    schema: Any = "int"
    for _ in range(100):
        schema = {"type": "array", "items": schema}
    datum: Any = [7]
    for _ in range(99):
        datum = [datum]
    data = fa_write(schema, datum)
    assert avroc.Writer(program(schema), b"", RefusedError)(datum) == data
    assert avroc.Reader(program(schema))(data, 0) == (datum, len(data))
    prog: Any = (2,)
    for _ in range(avroc.MAX_DEPTH + 1):
        prog = (10, prog)
    with pytest.raises(ValueError, match="deep"):
        avroc.Reader(prog)


def test_a_mutation_during_encoding_is_refused_not_a_crash(avroc: ModuleType) -> None:
    outer: list[Any] = []

    class Evil:
        def __hash__(self) -> int:
            return hash("b")

        def __eq__(self, other: object) -> bool:
            outer.clear()
            return False

    schema = {"type": "array", "items": rec("R", ("a", "long"), ("b", "long", 0))}
    outer.extend([{"a": 1, Evil(): 0}, {"a": 2}])
    with pytest.raises(RefusedError, match="changed size"):
        avroc.Writer(program(schema), b"", RefusedError)(outer)
    evil_map = {"x": {"a": 1, Evil(): 0}, "y": {"a": 2}}
    mschema = {"type": "map", "values": schema["items"]}
    outer.append(evil_map)
    # the list the values' __eq__ clears is not the dict being encoded: same bytes as fastavro
    assert avroc.Writer(program(mschema), b"", RefusedError)(evil_map) == fa_write(mschema, evil_map)


def test_no_reference_or_memory_leaks(avroc: ModuleType) -> None:
    shared, dflt = "shared-" + str(random.random()), "default-" + str(random.random())
    prog = (12, (("s", True, None, (7,)), ("d", False, dflt, (13, 0, 1, (7,))), ("e", True, None, program(ENUM)),
                 ("n", True, None, (2,))))
    writer, reader = avroc.Writer(prog, b"\x01", RefusedError), avroc.Reader(prog)
    symbol = prog[1][2][3][1][2]
    good, bad, big_bad = {"s": shared, "e": "C", "n": 1}, {"s": shared, "e": "C", "n": "x"}, {"s": "x" * 5000, "n": 1}
    data = writer(good)[1:]
    objects = (shared, dflt, symbol, RefusedError, good, bad, data, prog)
    before = [sys.getrefcount(o) for o in objects]
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            assert writer(good)
            reader(data, 0)
            with suppress(RefusedError):
                writer(bad)
            with suppress(RefusedError):
                writer(big_bad)
            with suppress(ValueError):
                reader(data[:-1], 0)
        for _ in range(1000):
            avroc.Writer(prog, b"", RefusedError)
            avroc.Reader(prog)
            with suppress(ValueError):
                avroc.Reader((12, (("d", False, dflt, (7,)), ("x", True, dflt, (13, 0, 0, (7,))))))
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(o) for o in objects] == before
    assert grown < 50_000


def order_case() -> tuple[Any, Any]:
    """A record like the order state: ~25 fields, nested arrays of records, a map, null unions."""
    hist = rec("H", ("at", "long"), ("state", "string"), ("note", ["null", "string"], None))
    status = {"type": "enum", "name": "S", "symbols": ["NEW", "PAID", "SHIPPED", "DONE"]}
    schema = rec("Order", ("order_id", "string"), ("customer_id", "string"), ("status", status), ("created_at", "long"),
                 ("updated_at", "long"), ("version", "long"), ("total", "long"), ("currency", "string"),
                 ("items", {"type": "array", "items": ITEM}), ("history", {"type": "array", "items": hist}),
                 ("attempts", {"type": "map", "values": "int"}), ("payment_id", ["null", "string"], None),
                 ("shipment_id", ["null", "string"], None), ("error", ["null", "string"], None),
                 ("deadline", ["null", "long"], None), ("timer_id", ["null", "string"], None), ("retries", "int"),
                 ("region", "string"), ("priority", "int"), ("tags", {"type": "array", "items": "string"}),
                 ("ok", "boolean"), ("score", "double"), ("saga", ["null", "string"], None), ("step", "int"))
    datum = {"order_id": "ord-000123456", "customer_id": "cust-98765", "status": "PAID", "created_at": NOW,
             "updated_at": NOW + 5000, "version": 7, "total": 129900, "currency": "EUR",
             "items": [{"sku": "SKU-1", "qty": 2, "price": 19900}, {"sku": "SKU-22", "qty": 1, "price": 90100}],
             "history": [{"at": NOW + i, "state": s, "note": n} for i, s, n in
                         [(0, "NEW", None), (1000, "PAID", "card ok"), (2000, "RESERVED", None)]],
             "attempts": {"reserve": 1, "charge": 2}, "payment_id": "pay-abcdef123", "shipment_id": None, "error": None,
             "deadline": NOW + 86_400_000, "timer_id": "t-ord-000123456-deadline", "retries": 0, "region": "eu-west-1",
             "priority": 3, "tags": ["web", "promo"], "ok": True, "score": 0.75, "saga": "checkout", "step": 4}
    return schema, datum


def test_order_state_round_trip(avroc: ModuleType) -> None:
    schema, datum = order_case()
    data = fa_write(schema, datum)
    assert avroc.Writer(program(schema), b"", RefusedError)(datum) == data
    assert avroc.Reader(program(schema))(data, 0) == (fa_read(schema, data), len(data))


if __name__ == "__main__":
    import tempfile
    import timeit

    with tempfile.TemporaryDirectory() as tmp:
        mod = build(Path(tmp))
    order_schema, order = order_case()
    encoded = fa_write(order_schema, order)
    w, r = mod.Writer(program(order_schema), b"\0\0\0\0\1", RefusedError), mod.Reader(program(order_schema))
    parsed = parse_schema(order_schema)
    for label, fn, n in [("C encode", lambda: w(order), 200_000), ("C decode", lambda: r(encoded, 0), 200_000),
                         ("fastavro encode", lambda: schemaless_writer(io.BytesIO(), parsed, order), 20_000),
                         ("fastavro decode", lambda: schemaless_reader(io.BytesIO(encoded), parsed, None), 20_000)]:
        print(f"{label}: {min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6:.3f} us ({len(encoded)} bytes)")
