"""The Avro codecs (streams.contracts.fastcodec) against fastavro: same bytes, same datums, or an exception (the
caller then falls back to fastavro); readers also raise on malformed input fastavro lets through. Every test runs
on both backends: the generated Python and the C codec (streams/contracts/_avroc.c, built by scripts/compile)."""

from __future__ import annotations

import datetime
import decimal
import importlib
import math
import random
import struct
import uuid
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streams.contracts import fastcodec
from streams.contracts.avsc import without_time_types
from streams.contracts.catalogue import Catalogue, parse
from streams.contracts.fastcodec import compile_reader, compile_writer
from streams.examples.orders.workflow import order_saga
from streams.processors.avro import default_schemas

Writer = Callable[[Any], bytes]
Reader = Callable[[bytes, int], tuple[Any, int]]
SCHEMAS = default_schemas()
# With the order saga's stored-state record, which the engine derives from the workflow's declared data fields.
CATALOGUE = Catalogue.load(SCHEMAS).with_record(order_saga().stored_record(), "orders-state")
V2 = Catalogue.load(SCHEMAS, overrides=[SCHEMAS / "evolution" / "OrderPlaced.v2.avsc"]).get("OrderPlaced")


@pytest.fixture(autouse=True, params=["generated", "c"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which codec compile_writer/compile_reader hand out for this test."""
    codec = None
    if request.param == "c":
        try:
            codec = importlib.import_module("streams.contracts._avroc")
        except ImportError:
            pytest.fail("the C codec is not built (scripts/compile build needs mypy and a C compiler)")
    fastcodec.native_codec()  # decided once per process; swapped here
    saved = list(fastcodec._CODEC)
    fastcodec._CODEC[:] = [codec]
    try:
        yield str(request.param)
    finally:
        fastcodec._CODEC[:] = saved


def record(name: str, *fields: tuple[Any, ...], **extra: Any) -> Any:
    return {"type": "record", "name": name, **extra,
            "fields": [{"name": f[0], "type": f[1], **({"default": f[2]} if len(f) > 2 else {})} for f in fields]}


def rec(t: Any, **extra: Any) -> Any:
    return parse_schema({"type": "record", "name": "R", "fields": [{"name": "f", "type": t, **extra}]})


DEEP = record("Deep", ("flag", ["boolean", "null"]), ("raw", ["null", "bytes"]), namespace="other.ns")
INNER = record("Inner", ("x", "long"), ("colour", "Colour"), ("tags", {"type": "array", "items": "string"}),
               ("hash", ["null", "Hash"]), ("deep", DEEP))
SYNTHETIC = record(
    "Everything", ("n", "null"), ("b", "boolean"), ("i", "int"), ("l", "long"), ("f", "float"), ("d", "double"),
    ("by", "bytes"), ("s", "string"), ("e", {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}),
    ("fx", {"type": "fixed", "name": "Hash", "size": 5}), ("ai", {"type": "array", "items": "int"}),
    ("ms", {"type": "map", "values": "string"}), ("inner", INNER), ("inners", {"type": "array", "items": "Inner"}),
    ("by_key", {"type": "map", "values": {"type": "array", "items": ["null", "Inner"]}}), ("deep2", "other.ns.Deep"),
    ("u_s", ["null", "string"], None), ("u_l", ["long", "null"], 0), ("u_i", ["null", "int"]),
    ("u_f", ["float", "null"]), ("u_d", ["null", "double"]), ("u_e", ["Colour", "null"]), ("u_fx", ["null", "Hash"]),
    ("u_a", ["null", {"type": "array", "items": "double"}]), ("u_b", ["boolean", "null"]), ("u_r", ["null", "Inner"]),
    ("u_m", [{"type": "map", "values": ["null", "long"]}, "null"]), ("u_by", ["bytes", "null"]),
    ("maps", {"type": "array", "items": {"type": "map", "values": "bytes"}}), namespace="test.fast")

# name -> (schema JSON, parsed schema): every record of the repo's catalogue, the v2 OrderPlaced, the synthetic one
CASES: dict[str, tuple[Any, Any]] = {
    n: (e.schema, e.parsed) for n in CATALOGUE.names for e in [CATALOGUE.get(n)] if e.schema["type"] == "record"}
CASES["OrderPlaced.v2"] = (V2.schema, V2.parsed)
CASES["synthetic"] = (SYNTHETIC, parse_schema(SYNTHETIC))

INTS = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8192, -8193, 2**31 - 1, -(2**31), 2**20]
LONGS = [*INTS, 16383, 16384, -16385, 2**62, -(2**62), 2**63 - 1, -(2**63), 2**32, -(2**32) - 1]
FLOATS = [0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan, 3.4028234663852886e38, 1.401298464324817e-45, 0.1]
DOUBLES = [*FLOATS, 1.7976931348623157e308, 5e-324, 1e300]
STRINGS = ["", "a", "é", "日本", "😀", "naïve café", "x" * 64, "ü" * 40, "\x00", "line\nbreak"]
ALPHABET, COUNTS = "abcxyzAZ09 _-é日😀\x00", [0, 0, 1, 1, 2, 3, 5]
TIME_RANGES = {"date": (-100_000, 100_000), "time-millis": (0, 86_399_999), "time-micros": (0, 86_399_999_999),
               "timestamp-millis": (-(2**40), 2**42), "local-timestamp-millis": (-(2**40), 2**42),
               "timestamp-micros": (-(2**50), 2**52), "local-timestamp-micros": (-(2**50), 2**52)}


def named_types(schema: Any, out: dict[str, Any]) -> dict[str, Any]:
    """Full name -> definition of every named type a parsed schema defines (later uses are name strings)."""
    for node in [n for n in (schema if isinstance(schema, list) else [schema]) if isinstance(n, dict)]:
        if node.get("type") in ("record", "error", "enum", "fixed"):
            out[node["name"]] = node
        for child in [f["type"] for f in node.get("fields", ())] + [node.get(k) for k in ("items", "values", "type")]:
            if isinstance(child, (dict, list)):
                named_types(child, out)
    return out


class Gen:
    """Random valid datums for a parsed schema."""

    def __init__(self, schema: Any, rng: random.Random) -> None:
        self.schema, self.rng, self.names = schema, rng, named_types(schema, {})
        self.prims: dict[str, Callable[[], Any]] = {
            "null": lambda: None, "boolean": lambda: rng.random() < 0.5, "string": self.string,
            "int": lambda: self.number(INTS, 32), "long": lambda: self.number(LONGS, 64),
            "float": lambda: rng.choice(FLOATS) if rng.random() < 0.3 else rng.uniform(-1e6, 1e6),
            "double": lambda: rng.choice(DOUBLES) if rng.random() < 0.3 else rng.uniform(-1e300, 1e300),
            "bytes": lambda: rng.randbytes(rng.choice([0, 1, 5, 63, 64, 100]))}

    def string(self) -> str:
        r = self.rng
        return r.choice(STRINGS) if r.random() < 0.5 else "".join(r.choice(ALPHABET) for _ in range(r.randint(0, 20)))

    def count(self, depth: int) -> int:
        return 0 if depth > 8 else 70 if depth < 3 and self.rng.random() < 0.02 else self.rng.choice(COUNTS)

    def number(self, edges: list[int], bits: int) -> int:
        b = self.rng.randint(0, bits - 1)
        return self.rng.choice(edges) if self.rng.random() < 0.5 else self.rng.randint(-(1 << b), (1 << b) - 1)

    def datum(self, s: Any = None, depth: int = 0) -> Any:
        rng, s = self.rng, self.schema if s is None else s
        if isinstance(s, list):
            others = [b for b in s if b != "null"]
            if len(others) < len(s) and (not others or rng.random() < 0.25 + 0.1 * depth):
                return None
            return self.datum(rng.choice(others), depth + 1)
        if isinstance(s, str):
            return self.datum(self.names[s], depth) if s in self.names else self.prims[s]()
        kind, logical = s["type"], s.get("logicalType")
        if logical in TIME_RANGES:
            return rng.randint(*TIME_RANGES[logical])
        if logical == "uuid":
            return (str if rng.random() < 0.5 else uuid.UUID)(str(uuid.UUID(int=rng.getrandbits(128))))
        if logical == "decimal":
            return decimal.Decimal(rng.randint(-(10**9), 10**9)).scaleb(-s.get("scale", 0))
        if kind in ("record", "error"):
            return {f["name"]: self.datum(f["type"], depth + 1) for f in s["fields"]}
        if kind in ("enum", "fixed"):
            return rng.choice(s["symbols"]) if kind == "enum" else rng.randbytes(s["size"])
        if kind == "array":
            return [self.datum(s["items"], depth + 1) for _ in range(self.count(depth))]
        if kind == "map":
            return {self.string(): self.datum(s["values"], depth + 1) for _ in range(self.count(depth))}
        return self.datum(kind, depth)


def fa_write(schema: Any, datum: Any) -> bytes:
    schemaless_writer(buf := BytesIO(), schema, datum)
    return buf.getvalue()


def fa_read(schema: Any, data: bytes, pos: int = 0) -> tuple[Any, int]:
    buf = BytesIO(data[pos:])
    return schemaless_reader(buf, schema, None), pos + buf.tell()


def same(a: Any, b: Any) -> bool:
    """Equal values of identical types (True is not 1, memoryview is not bytes), floats bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


def short(x: Any) -> str:
    text = repr(x)
    return text if len(text) < 400 else text[:400] + "..."


def assert_same_or_refused(writer: Writer, schema: Any, datum: Any) -> None:
    """The writer raises, or fastavro accepts the datum and writes the very same bytes."""
    try:
        expected: bytes | None = fa_write(schema, datum)
    except Exception:
        expected = None
    try:
        got = writer(datum)
    except Exception:
        return
    assert expected is not None, f"fastavro refuses {short(datum)}, the codec wrote {short(got)}"
    assert type(got) is bytes and got == expected, f"{short(datum)}: codec {got!r} != fastavro {expected!r}"


def assert_read_same_or_refused(reader: Reader, schema: Any, data: bytes, pos: int = 0) -> None:
    """The reader raises, or fastavro reads the same datum and stops at the same position."""
    try:
        got = reader(data, pos)
    except Exception:
        return
    try:
        want = fa_read(schema, data, pos)
    except Exception as exc:
        pytest.fail(f"fastavro refuses {short(data[pos:])} ({exc!r}) but the codec read {short(got)}")
    assert got[1] == want[1] and same(got[0], want[0]), f"{short(data[pos:])}: codec {got!r} != fastavro {want!r}"


def codecs(name: str) -> tuple[Any, Writer, Reader, Any]:
    """(parsed schema, writer, reader, schema the reader reads): time types stripped only if the reader needs it."""
    raw, parsed = CASES[name]
    writer, reader, read_schema = compile_writer(parsed), compile_reader(parsed), parsed
    assert writer is not None, f"no writer for {name}"
    if reader is None:
        stripped = without_time_types(raw)
        assert stripped != raw, f"no reader for {name}, which has no logical types"
        reader = compile_reader(read_schema := parse(stripped))
        assert reader is not None, f"no reader for {name} even without its time types"
    return parsed, writer, reader, read_schema


@pytest.mark.parametrize("name", sorted(CASES))
def test_bytes_and_datums_match_fastavro(name: str) -> None:
    parsed, writer, reader, read_schema = codecs(name)
    rng = random.Random(name)
    gen = Gen(parsed, rng)
    for _ in range(200):
        datum = gen.datum()
        expected, got = fa_write(parsed, datum), writer(datum)
        assert type(got) is bytes and got == expected, f"{name}: {short(datum)}"
        prefix, suffix = rng.randbytes(rng.randint(1, 6)), rng.randbytes(rng.randint(0, 3))
        for data, pos in ((expected, 0), (prefix + expected + suffix, len(prefix))):
            want, (value, end) = fa_read(read_schema, data, pos), reader(data, pos)
            assert end == want[1] == pos + len(expected), f"{name}: end {end}, want {want[1]} for {short(datum)}"
            assert same(value, want[0]), f"{name}: read {short(value)}, fastavro {short(want[0])}"


def test_generator_covers_the_edge_values() -> None:
    gen = Gen(CASES["synthetic"][1], random.Random(1))
    seen = [gen.datum() for _ in range(400)]
    assert {0, -1, 63, 64, 8191, 8192, 2**31 - 1, -(2**31)} <= {d["i"] for d in seen}
    assert {2**62, -(2**62), -1, 16383, 16384} <= {d["l"] for d in seen}
    assert {"", "é", "日本", "😀"} <= {d["s"] for d in seen} and any(d["ai"] == [] and d["ms"] == {} for d in seen)
    assert {type(d[k]) for d in seen for k in ("u_s", "u_l", "u_r")} == {type(None), str, int, dict}
    assert any(v for d in seen for v in d["by_key"].values()) and any(d["inner"]["deep"]["raw"] for d in seen)


E, S = {"type": "enum", "name": "E", "symbols": ["a", "b"]}, record("S", ("a", "int"))
A, TS = {"type": "array", "items": "int"}, {"type": "long", "logicalType": "timestamp-millis"}
REFUSALS: list[tuple[str, Any, Any]] = [
    ("string given bytes", "string", b"ab"), ("string given int", "string", 5), ("string given None", "string", None),
    ("lone surrogate", "string", "\ud800"), ("long given float", "long", 1.5), ("long given 2.0", "long", 2.0),
    ("long given bool", "long", True), ("long given str", "long", "7"), ("long given None", "long", None),
    ("long given Decimal", "long", decimal.Decimal("1.5")), ("long above 64 bits", "long", 2**63),
    ("long below 64 bits", "long", -(2**63) - 1), ("int above 32 bits", "int", 2**31),
    ("int below 32 bits", "int", -(2**31) - 1), ("int far out", "int", 2**40), ("int given float", "int", 2.0),
    ("boolean given 2", "boolean", 2), ("boolean given str", "boolean", "x"), ("boolean given None", "boolean", None),
    ("float out of range", "float", 1e39), ("float given int", "float", 1), ("double given str", "double", "1"),
    ("double given huge int", "double", 2**70), ("bytes given str", "bytes", "ab"), ("null given 0", "null", 0),
    ("bytes given bytearray", "bytes", bytearray(b"ab")), ("unknown enum symbol", E, "c"), ("enum given index", E, 0),
    ("enum given None", E, None), ("fixed too short", {"type": "fixed", "name": "F", "size": 4}, b"abc"),
    ("fixed too long", {"type": "fixed", "name": "F", "size": 4}, b"abcde"),
    ("fixed given str", {"type": "fixed", "name": "F", "size": 2}, "ab"),
    ("map with int keys", {"type": "map", "values": "int"}, {1: 2}),
    ("map given pairs", {"type": "map", "values": "int"}, [("a", 1)]), ("array given dict", A, {"a": 1}),
    ("array given str", {"type": "array", "items": "string"}, "abc"), ("array given tuple", A, (1, 2)),
    ("array given None", A, None), ("array item wrong", A, [1, "2"]), ("record given list", S, [1]),
    ("record given None", S, None), ("record missing field", S, {}), ("-type outside union", S, {"a": 1, "-type": "X"}),
    ("nullable given bytes", ["null", "string"], b"x"), ("nullable given int", ["null", "string"], 3),
    ("nullable long given bool", ["null", "long"], True), ("nullable long given float", ["null", "long"], 1.0),
    ("nullable double given int", ["null", "double"], 1), ("nullable record given {}", ["null", S], {}),
    ("tuple in a nullable array", ["null", A], (1, 2)), ("(name, value) in a union", ["null", A], ("int", 1)),
    ("(branch, value) naming no branch", ["null", {"type": "array", "items": "string"}], ("string", "x")),
    ("-type naming no branch", ["null", S], {"a": 1, "-type": "X"}),
    ("nullable map, bad value", ["null", {"type": "map", "values": "int"}], {"x": "y"}),
    ("timestamp given datetime", TS, datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)),
    ("naive datetime", ["null", TS], datetime.datetime(2020, 1, 1)),
]
MISSING = [("string", {}), (["null", "string"], {"default": None}), (["null", "string"], {}),
           ("string", {"default": "dflt"}), ("long", {"default": 7}), (["string", "null"], {"default": "x"})]
ABSENT = object()
WRITES = [(c, t, v, {}) for c, t, v in REFUSALS] + [(f"missing {t} {e}", t, ABSENT, e) for t, e in MISSING]


@pytest.mark.parametrize(("case", "t", "value", "extra"), WRITES, ids=[c[0] for c in WRITES])
def test_writer_refuses_or_matches_fastavro(case: str, t: Any, value: Any, extra: dict[str, Any]) -> None:
    schema = rec(t, **extra)
    writer = compile_writer(schema)
    assert writer is not None
    datum = {} if value is ABSENT else {"f": value}
    assert_same_or_refused(writer, schema, datum)
    assert_same_or_refused(writer, schema, {**datum, "unknown": 1})


def test_writer_on_mutated_datums() -> None:
    """Random valid datums with one value anywhere replaced by a wrong one, or one key dropped."""
    parsed, writer, _, _ = codecs("synthetic")
    rng = random.Random(3)
    gen = Gen(parsed, rng)
    bad: list[Any] = [None, True, False, 0, 2**31, 2**63, 1.5, "s", b"b", bytearray(b"b"), [], {}, [1], {"k": 1}, (1,),
                      ("s", "t"), object()]
    for _ in range(1000):
        node = datum = gen.datum()
        while True:  # walk down to a random container
            key = rng.choice(list(node) if isinstance(node, dict) else range(len(node)))
            child = node[key]
            if not isinstance(child, (dict, list)) or not child or rng.random() < 0.3:
                break
            node = child
        if isinstance(node, dict) and rng.random() < 0.2:
            del node[key]
        else:
            node[key] = rng.choice(bad)
        assert_same_or_refused(writer, parsed, datum)


@pytest.mark.parametrize("name", sorted(CASES))
def test_truncated_encodings_are_refused(name: str) -> None:
    parsed, _, reader, read_schema = codecs(name)
    rng = random.Random(name + "/truncate")
    gen = Gen(parsed, rng)
    for _ in range(3):
        enc = fa_write(parsed, gen.datum())
        n = len(enc)
        for k in range(n) if n < 300 else [*rng.sample(range(n), 200), *range(n - 30, n)]:
            assert_read_same_or_refused(reader, read_schema, enc[:k])
            assert_read_same_or_refused(reader, read_schema, b"\x02z" + enc[:k], 2)


@pytest.mark.parametrize("name", ["synthetic", "streams.orders.OrderState"])
def test_corrupted_encodings_are_refused_or_read_like_fastavro(name: str) -> None:
    parsed, _, reader, read_schema = codecs(name)
    rng = random.Random(name + "/corrupt")
    gen = Gen(parsed, rng)
    for _ in range(300):
        enc = bytearray(fa_write(parsed, gen.datum()))
        enc[rng.randrange(len(enc))] = rng.choice([0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        assert_read_same_or_refused(reader, read_schema, bytes(enc))


MUST_RAISE: list[tuple[str, Any, bytes]] = [
    ("union index -1", ["null", "string"], b"\x01\x02a"), ("union index -2", ["null", "string"], b"\x03\x02a"),
    ("union index 2", ["null", "string"], b"\x04\x02a"), ("[T, null] index -1", ["string", "null"], b"\x01"),
    ("union index huge", ["null", "long"], b"\xfe\xff\x03\x02"), ("enum index -1", E, b"\x01"),
    ("enum index 2", E, b"\x04"), ("enum index 64", E, b"\x80\x01"), ("string past the end", "string", b"\x0aab"),
    ("string length -1", "string", b"\x01ab"), ("bytes past the end", "bytes", b"\x0aab"),
    ("bytes length -2", "bytes", b"\x03abcd"), ("fixed short", {"type": "fixed", "name": "F", "size": 4}, b"abc"),
    ("map key past the end", {"type": "map", "values": "int"}, b"\x02\x0aab"),
    ("map key length -1", {"type": "map", "values": "int"}, b"\x02\x01ab\x02\x00"),
    ("union index -1 in items", {"type": "array", "items": ["null", "int"]}, b"\x02\x01\x02\x00"),
    ("bad utf-8", "string", b"\x02\xff"), ("empty input", "long", b""), ("varint cut", "long", b"\x80"),
    ("huge array count", A, b"\x80\x80\x80\x80\x80\x80\x02\x02"),
]


ODD: list[tuple[str, Any, bytes]] = [
    ("bool byte 2", "boolean", b"\x02"), ("bool byte 0xff", "boolean", b"\xff"),
    ("int beyond 32 bits", "int", b"\x80\x80\x80\x80\x10"), ("long of 11 bytes", "long", b"\xff" * 10 + b"\x01"),
    ("long beyond 64 bits", "long", b"\xfe" + b"\xff" * 8 + b"\x7f"), ("bit 64 set", "long", b"\x80" * 9 + b"\x02"),
    ("long of 10 bytes", "long", b"\xfe" + b"\xff" * 8 + b"\x01"), ("non-shortest varint", "int", b"\x82\x00"),
    ("bits 63-64", "long", b"\xfe" + b"\xff" * 8 + b"\x03"), ("negative array block", A, b"\x03\x04\x02\x04\x00"),
    ("two array blocks", A, b"\x02\x02\x02\x04\x00"),
    ("negative map block", {"type": "map", "values": "int"}, b"\x01\x06\x02a\x02\x00"),
]


@pytest.mark.parametrize(("case", "t", "data"), MUST_RAISE + ODD, ids=[c[0] for c in MUST_RAISE + ODD])
def test_reader_on_malformed_input(case: str, t: Any, data: bytes) -> None:
    """MUST_RAISE inputs raise even where fastavro reads something; ODD ones raise or read what fastavro reads."""
    schema = rec(t)
    reader = compile_reader(schema)
    assert reader is not None
    for buf, pos in ((data, 0), (b"\x07\x00" + data, 2)):
        if (case, t, data) in MUST_RAISE:
            with pytest.raises(Exception):  # noqa: B017 - any exception: the caller then asks fastavro
                reader(buf, pos)
        else:
            assert_read_same_or_refused(reader, schema, buf + b"\x00", pos)


OPTIONAL: dict[str, Any] = {
    "three-way union": rec(["null", "string", "long"]), "double before int": rec(["null", "double", "int"]),
    "no null": rec(["int", "string"]), "recursive": parse_schema(record("N", ("v", "long"), ("nx", ["null", "N"]))),
    "recursive in array": parse_schema(record("Tree", ("children", {"type": "array", "items": "Tree"}))),
    "uuid": rec({"type": "string", "logicalType": "uuid"}), "date": rec({"type": "int", "logicalType": "date"}),
    "decimal": rec({"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}),
    "orders.events union": CATALOGUE.topic_entry("orders.events").parsed,
}


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_unsupported_shapes_are_declined_or_correct(name: str) -> None:
    schema = OPTIONAL[name]
    writer, reader = compile_writer(schema), compile_reader(schema)
    gen = Gen(schema, random.Random(name))
    for _ in range(200 if writer or reader else 0):
        datum = gen.datum()
        expected = fa_write(schema, datum)
        if writer is not None:
            assert_same_or_refused(writer, schema, datum)
        if reader is not None:
            (value, end), want = reader(b"\x01" + expected, 1), fa_read(schema, expected)
            assert end == 1 + want[1] and same(value, want[0]), f"{name}: read {short(value)}, fastavro {want[0]!r}"


@pytest.mark.parametrize("depth", [25, 300])
def test_deeply_nested_schemas_get_a_codec_or_none(depth: int, backend: str) -> None:
    # Python compiles at most 20 nested loops, the C codec recurses at most 256 levels: past that, no codec
    # (the caller uses fastavro) instead of a SyntaxError or ValueError while building one
    t: Any = "long"
    for _ in range(depth):
        t = {"type": "array", "items": t}
    schema = parse_schema({"type": "record", "name": "Deep", "fields": [{"name": "f", "type": t}]})
    writer, reader = compile_writer(schema), compile_reader(schema)
    covered = backend == "c" and depth < 256
    assert (writer is not None, reader is not None) == (covered, covered)
    if writer is not None and reader is not None:
        datum: Any = 7
        for i in range(depth):
            datum = [datum, datum] if i < 3 else [datum]
        assert writer({"f": datum}) == fa_write(schema, {"f": datum})
        assert reader(fa_write(schema, {"f": datum}), 0)[0] == {"f": datum}
