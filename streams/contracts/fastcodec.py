"""The hot path's Avro codecs, one pair per schema: the C codec, or Avro code generated as Python source.

fastavro interprets the schema for every datum (a dict lookup and a type dispatch per field); for the order
state that is ~20 us an encode, the largest single cost of a workflow step. A function generated for one
schema does the same work as straight-line code, about twice as fast, with the same bytes. The C codec
(``_avroc.c``, see the end of this module) runs the same rules over the schema resolved once into a program.

fastavro stays the reference. A generated writer handles exactly the Python types it can encode the way
fastavro does (str for string, int for long, dict for record, list or tuple for array ...) and raises on
anything else; the caller then encodes with fastavro, whose answer (bytes or error) is final. A generated
reader never resolves schemas (the caller uses it only when writer and reader schema are the same) and
raises on malformed input, so the caller can ask fastavro for its error. Schemas with shapes the generator
does not cover (unions of several non-null types, recursive types, non-time logical types) get no codec.
"""

from __future__ import annotations

import importlib
import struct
import sys
from collections.abc import Callable
from typing import Any

Writer = Callable[[Any], bytes]
Reader = Callable[[bytes, int], tuple[Any, int]]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# Logical types that annotate an int or long without changing its bytes. fastavro also accepts datetimes for
# them when writing: the generated writer refuses those (not an int), so fastavro converts them.
_TIME_TYPES = frozenset({"timestamp-millis", "timestamp-micros", "time-millis", "time-micros", "date",
                         "local-timestamp-millis", "local-timestamp-micros"})
_INT32 = (-(1 << 31), 1 << 31)
_INT64 = (-(1 << 63), 1 << 63)


class UnsupportedError(Exception):
    """The schema has a shape the generator does not cover; fastavro handles it."""


class RefusedError(Exception):
    """This datum is not one the generated writer encodes exactly as fastavro would."""


def zigzag(n: int) -> bytes:
    """Avro's varint encoding of an int or long."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# Varints of 0..16383 (two bytes at most): lengths, counts, small numbers, without arithmetic.
_SMALL = tuple(zigzag(i) for i in range(1 << 14))


# Varints of recent larger numbers. Most are epoch-millisecond times, and a state repeats the same ones at
# every write (created_at, its history, timer due times, now): a dict hit instead of a 7-byte varint loop.
_LARGE: dict[int, bytes] = {}
_LARGE_MAX = 1 << 16


def _large(n: int) -> bytes:
    b = _LARGE.get(n)
    if b is None:
        b = zigzag(n)
        if len(_LARGE) >= _LARGE_MAX:
            _LARGE.clear()
        _LARGE[n] = b
    return b


def _long(n: Any) -> bytes:
    if type(n) is not int or not _INT64[0] <= n < _INT64[1]:
        raise RefusedError(f"not a long: {n!r}")
    return _SMALL[n] if 0 <= n < 16384 else _large(n)


def _int(n: Any) -> bytes:
    if type(n) is not int or not _INT32[0] <= n < _INT32[1]:
        raise RefusedError(f"not an int: {n!r}")
    return _SMALL[n] if 0 <= n < 16384 else _large(n)


def _read_long(d: bytes, p: int) -> tuple[int, int]:
    b = d[p]
    z = b & 0x7F
    shift = 7
    while b > 0x7F:
        p += 1
        b = d[p]
        z |= (b & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise ValueError("varint longer than 10 bytes")
    if z >> 64:
        raise ValueError("varint beyond 64 bits")
    return (z >> 1) ^ -(z & 1), p + 1


def _bad(what: str) -> Exception:
    return ValueError(what)


_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")


class _Gen:
    """Source code for one schema; ``names`` are the named types seen so far (fastavro's parsed form
    defines a named type at its first use and refers to it by full name afterwards)."""

    def __init__(self, schema: Any) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.n = 0
        named = schema.get("__named_schemas") if isinstance(schema, dict) else None
        self.named: dict[str, Any] = dict(named or {})
        self.active: set[str] = set()

    def var(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: Any, prefix: str = "_c") -> str:
        name = self.var(prefix)
        self.consts[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def resolve(self, schema: Any) -> tuple[str, Any]:
        """(type, schema dict or name) with named references looked up."""
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return schema, schema
            found = self.named.get(schema)
            if found is None:
                raise UnsupportedError(f"unknown named type {schema}")
            if schema in self.active:
                raise UnsupportedError(f"recursive type {schema}")
            return str(found["type"]), found
        if isinstance(schema, list):
            return "union", schema
        if not isinstance(schema, dict):
            raise UnsupportedError(f"unexpected schema {schema!r}")
        t = schema.get("type")
        logical = schema.get("logicalType")
        if logical is not None and not (logical in _TIME_TYPES and t in ("int", "long")):
            raise UnsupportedError(f"logical type {logical}")
        if isinstance(t, (dict, list)):
            return self.resolve(t)
        if t in _PRIMITIVES:
            return str(t), t
        if t in ("record", "error", "enum", "fixed"):
            name = schema.get("name")
            if isinstance(name, str):
                if name in self.active:
                    raise UnsupportedError(f"recursive type {name}")
                self.named.setdefault(name, schema)
            return str(t), schema
        if t in ("array", "map"):
            return str(t), schema
        if isinstance(t, str):
            return self.resolve(t)
        raise UnsupportedError(f"unexpected schema {schema!r}")

    def has_logical(self, schema: Any, seen: set[str] | None = None) -> bool:
        """Whether a logical type annotates anything reachable from ``schema``."""
        seen = set() if seen is None else seen
        if isinstance(schema, str) and schema in seen:
            return False
        if isinstance(schema, dict) and schema.get("logicalType") is not None:
            return True
        kind, s = self.resolve(schema)
        if kind == "union":
            return any(self.has_logical(b, seen) for b in s)
        if kind in ("record", "error"):
            seen.add(str(s.get("name", "")))
            return any(self.has_logical(f["type"], seen) for f in s["fields"])
        if kind == "array":
            return self.has_logical(s["items"], seen)
        if kind == "map":
            return self.has_logical(s["values"], seen)
        return False


def _null_union(gen: _Gen, branches: list[Any]) -> tuple[int, int, Any]:
    """(index of null, index of the other branch, the other branch) of a ["null", T] / [T, "null"] union."""
    if len(branches) != 2:
        raise UnsupportedError("union of more than one non-null type")
    kinds = [gen.resolve(b)[0] for b in branches]
    if kinds.count("null") != 1:
        raise UnsupportedError("union without exactly one null")
    i_null = kinds.index("null")
    i_other = 1 - i_null
    if kinds[i_other] == "union":
        raise UnsupportedError("nested union")
    return i_null, i_other, branches[i_other]


# -- writer ---------------------------------------------------------------------------------------------------


def _optional(field: Any) -> bool:
    """Whether a record field may be missing from a datum: fastavro writes ``datum.get(name, default)``."""
    return "default" in field or (isinstance(field["type"], list) and "null" in field["type"])


def _w(gen: _Gen, schema: Any, v: str, depth: int) -> None:
    """Append the encoding of the value in variable ``v`` (``a`` appends a bytes object)."""
    kind, s = gen.resolve(schema)
    e = gen.emit
    if kind == "null":
        e(depth, f"if {v} is not None: raise _Refused('not null')")
    elif kind == "boolean":
        e(depth, f"if {v} is True: a(b'\\x01')")
        e(depth, f"elif {v} is False: a(b'\\x00')")
        e(depth, "else: raise _Refused('not a bool')")
    elif kind in ("int", "long"):
        fn = "_int" if kind == "int" else "_long"
        e(depth, f"a(_SMALL[{v}] if type({v}) is int and 0 <= {v} < 16384 else {fn}({v}))")
    elif kind in ("float", "double"):
        e(depth, f"if type({v}) is not float and type({v}) is not int: raise _Refused('not a number')")
        e(depth, f"a({'_F32' if kind == 'float' else '_F64'}.pack({v}))")
    elif kind == "bytes":
        e(depth, f"if type({v}) is not bytes: raise _Refused('not bytes')")
        e(depth, f"a(_SMALL[len({v})] if len({v}) < 16384 else _long(len({v}))); a({v})")
    elif kind == "string":
        b = gen.var("b")
        e(depth, f"if type({v}) is not str: raise _Refused('not a str')")
        e(depth, f"{b} = {v}.encode()")
        e(depth, f"a(_SMALL[len({b})] if len({b}) < 16384 else _long(len({b}))); a({b})")
    elif kind == "enum":
        table = gen.const({sym: _SMALL[i] if i < 16384 else zigzag(i) for i, sym in enumerate(s["symbols"])}, "_e")
        e(depth, f"if type({v}) is not str: raise _Refused('not a str')")
        e(depth, f"a({table}[{v}])")
    elif kind == "fixed":
        e(depth, f"if type({v}) is not bytes or len({v}) != {int(s['size'])}: raise _Refused('not the fixed size')")
        e(depth, f"a({v})")
    elif kind == "array":
        x = gen.var("x")
        e(depth, f"if type({v}) is not list and type({v}) is not tuple: raise _Refused('not a list')")
        e(depth, f"if {v}:")
        e(depth + 1, f"a(_SMALL[len({v})] if len({v}) < 16384 else _long(len({v})))")
        e(depth + 1, f"for {x} in {v}:")
        _w(gen, s["items"], x, depth + 2)
        e(depth, "a(b'\\x00')")
    elif kind == "map":
        k, x, b = gen.var("k"), gen.var("x"), gen.var("b")
        e(depth, f"if type({v}) is not dict: raise _Refused('not a dict')")
        e(depth, f"if {v}:")
        e(depth + 1, f"a(_SMALL[len({v})] if len({v}) < 16384 else _long(len({v})))")
        e(depth + 1, f"for {k}, {x} in {v}.items():")
        e(depth + 2, f"if type({k}) is not str: raise _Refused('map key not a str')")
        e(depth + 2, f"{b} = {k}.encode(); a(_SMALL[len({b})] if len({b}) < 16384 else _long(len({b}))); a({b})")
        _w(gen, s["values"], x, depth + 2)
        e(depth, "a(b'\\x00')")
    elif kind in ("record", "error"):
        name = str(s.get("name", ""))
        gen.active.add(name)
        e(depth, f"if type({v}) is not dict: raise _Refused('not a dict')")
        for f in s["fields"]:
            x = gen.var("f")
            ftype = f["type"]
            if _optional(f):
                e(depth, f"{x} = {v}.get({f['name']!r}, {gen.const(f.get('default'))})")
            else:
                e(depth, f"{x} = {v}[{f['name']!r}]")
            _w(gen, ftype, x, depth)
        gen.active.discard(name)
    elif kind == "union":
        i_null, i_other, other = _null_union(gen, s)
        e(depth, f"if {v} is None: a({_SMALL[i_null]!r})")
        # fastavro reads a tuple in a union as (branch name, value), and a dict's "-type" key as its branch
        e(depth, f"elif type({v}) is tuple or (type({v}) is dict and '-type' in {v}): raise _Refused('typed union')")
        e(depth, "else:")
        e(depth + 1, f"a({_SMALL[i_other]!r})")
        _w(gen, other, v, depth + 1)
    else:
        raise UnsupportedError(f"type {kind}")


def compile_writer(schema: Any, prefix: bytes = b"", native: bool = True) -> Writer | None:
    """A writer of ``prefix`` + the encoding of a datum of ``schema`` (fastavro-parsed), or None if the
    generator does not cover it. ``native``: the C codec when it is built (see :func:`native_codec`)."""
    codec = native_codec() if native else None
    if codec is not None:
        try:
            fn: Writer = codec.Writer(program(schema), prefix, RefusedError)
        except (UnsupportedError, TypeError, ValueError):  # e.g. nested deeper than the C codec recurses
            return None
        return fn
    gen = _Gen(schema)
    try:
        gen.emit(0, "def write(v0):")
        gen.emit(1, "o = [_prefix]; a = o.append")
        _w(gen, schema, "v0", 1)
        gen.emit(1, "return b''.join(o)")
    except UnsupportedError:
        return None
    ns: dict[str, Any] = {"_SMALL": _SMALL, "_long": _long, "_int": _int, "_F32": _F32, "_F64": _F64,
                          "_Refused": RefusedError, "_prefix": prefix, **gen.consts}
    gen_fn: Writer | None = _define(gen, "write", ns)
    return gen_fn


# -- reader ---------------------------------------------------------------------------------------------------


def _r(gen: _Gen, schema: Any, v: str, depth: int) -> None:
    """Read one value of ``schema`` from ``d`` at ``p`` into variable ``v``, advancing ``p``."""
    kind, s = gen.resolve(schema)
    e = gen.emit
    if kind == "null":
        e(depth, f"{v} = None")
    elif kind == "boolean":
        e(depth, f"{v} = d[p]; p += 1")
        e(depth, f"if {v} > 1: raise _bad('boolean byte')")
        e(depth, f"{v} = {v} == 1")
    elif kind in ("int", "long"):
        e(depth, f"{v} = d[p]")
        e(depth, f"if {v} < 128: p += 1; {v} = ({v} >> 1) ^ -({v} & 1)")
        e(depth, f"else: {v}, p = _read_long(d, p)")
    elif kind in ("float", "double"):
        st = "_F32" if kind == "float" else "_F64"
        e(depth, f"{v} = {st}.unpack_from(d, p)[0]; p += {4 if kind == 'float' else 8}")
    elif kind in ("bytes", "string"):
        n = gen.var("n")
        _r(gen, "long", n, depth)
        e(depth, f"if {n} < 0 or p + {n} > len(d): raise _bad('length past the end')")
        e(depth, f"{v} = d[p:p + {n}]{'.decode()' if kind == 'string' else ''}; p += {n}")
    elif kind == "enum":
        syms = gen.const(tuple(s["symbols"]), "_s")
        i = gen.var("i")
        _r(gen, "long", i, depth)
        e(depth, f"if not 0 <= {i} < {len(s['symbols'])}: raise _bad('enum index')")
        e(depth, f"{v} = {syms}[{i}]")
    elif kind == "fixed":
        size = int(s["size"])
        e(depth, f"if p + {size} > len(d): raise _bad('fixed past the end')")
        e(depth, f"{v} = d[p:p + {size}]; p += {size}")
    elif kind in ("array", "map"):
        n, x, k = gen.var("n"), gen.var("x"), gen.var("k")
        e(depth, f"{v} = {'[]' if kind == 'array' else '{}'}")
        e(depth, "while True:")
        _r(gen, "long", n, depth + 1)
        e(depth + 1, f"if {n} == 0: break")
        e(depth + 1, f"if {n} < 0:")  # a block with its byte size: skip the size
        e(depth + 2, f"{n} = -{n}")
        e(depth + 2, "_, p = _read_long(d, p)")
        e(depth + 1, f"for _ in range({n}):")
        if kind == "array":
            _r(gen, s["items"], x, depth + 2)
            e(depth + 2, f"{v}.append({x})")
        else:
            _r(gen, "string", k, depth + 2)
            _r(gen, s["values"], x, depth + 2)
            e(depth + 2, f"{v}[{k}] = {x}")
    elif kind in ("record", "error"):
        name = str(s.get("name", ""))
        gen.active.add(name)
        names = []
        for f in s["fields"]:
            x = gen.var("f")
            _r(gen, f["type"], x, depth)
            names.append((f["name"], x))
        gen.active.discard(name)
        e(depth, f"{v} = {{{', '.join(f'{n!r}: {x}' for n, x in names)}}}")
    elif kind == "union":
        i_null, i_other, other = _null_union(gen, s)
        i = gen.var("i")
        _r(gen, "long", i, depth)
        e(depth, f"if {i} == {i_null}: {v} = None")
        e(depth, f"elif {i} == {i_other}:")
        _r(gen, other, v, depth + 1)
        e(depth, "else: raise _bad('union index')")
    else:
        raise UnsupportedError(f"type {kind}")


def compile_reader(schema: Any, native: bool = True) -> Reader | None:
    """A reader for data written with ``schema`` and read as it (no resolution), or None if not covered.
    Schemas that keep logical types are not covered: fastavro turns those values into datetimes."""
    gen = _Gen(schema)
    try:
        if gen.has_logical(schema):
            return None
        codec = native_codec() if native else None
        if codec is not None:
            try:
                fn: Reader = codec.Reader(program(schema))
            except (TypeError, ValueError):  # e.g. nested deeper than the C codec recurses: fastavro reads it
                return None
            return fn
        gen.emit(0, "def read(d, p):")
        _r(gen, schema, "v0", 1)
        gen.emit(1, "return v0, p")
    except UnsupportedError:
        return None
    ns: dict[str, Any] = {"_read_long": _read_long, "_F32": _F32, "_F64": _F64, "_bad": _bad, **gen.consts}
    gen_fn: Reader | None = _define(gen, "read", ns)
    return gen_fn


def _define(gen: _Gen, name: str, ns: dict[str, Any]) -> Any:
    """Function ``name`` of the generated source, or None where Python cannot compile it: it nests at most 20
    loops and 100 indents, and fastavro takes deeper schemas."""
    try:
        exec(compile("\n".join(gen.lines), f"<avro {name}>", "exec"), ns)  # our own generated source
    except SyntaxError:
        return None
    return ns[name]


# -- the C codec ----------------------------------------------------------------------------------------------
# streams/contracts/_avroc.c runs the same writer and reader over a schema *program*: the schema resolved once
# into nested tuples, named types inlined. Generated Python still costs ~6 us to encode an order state and is
# the largest cost of a workflow step left; the C codec does it in well under one. It is built with the compiled
# hot path (streams/_native.py) and used only when that is in use; the generated code is its fallback.

NULL, BOOLEAN, INT, LONG, FLOAT, DOUBLE, BYTES, STRING, ENUM, FIXED, ARRAY, MAP, RECORD, UNION = range(14)
_OPS = {"null": NULL, "boolean": BOOLEAN, "int": INT, "long": LONG, "float": FLOAT, "double": DOUBLE,
        "bytes": BYTES, "string": STRING}


def program(schema: Any) -> tuple[Any, ...]:
    """``schema`` (fastavro-parsed) as the C codec's program; UnsupportedError where the generator declines."""
    return _program(_Gen(schema), schema)


def _program(gen: _Gen, schema: Any) -> tuple[Any, ...]:
    kind, s = gen.resolve(schema)
    op = _OPS.get(kind)
    if op is not None:
        return (op,)
    if kind == "enum":
        symbols = tuple(sys.intern(str(x)) for x in s["symbols"])
        return ENUM, symbols, {x: i for i, x in enumerate(symbols)}
    if kind == "fixed":
        return FIXED, int(s["size"])
    if kind == "array":
        return ARRAY, _program(gen, s["items"])
    if kind == "map":
        return MAP, _program(gen, s["values"])
    if kind in ("record", "error"):
        name = str(s.get("name", ""))
        gen.active.add(name)
        fields = tuple(
            (sys.intern(str(f["name"])), not _optional(f), f.get("default"), _program(gen, f["type"]))
            for f in s["fields"])
        gen.active.discard(name)
        return RECORD, fields
    if kind == "union":
        i_null, i_other, other = _null_union(gen, s)
        return UNION, i_null, i_other, _program(gen, other)
    raise UnsupportedError(f"type {kind}")


_CODEC: list[Any] = []


def native_codec() -> Any:
    """The C codec module, or None: not built, or the package runs pure Python (streams/_native.py)."""
    if not _CODEC:
        codec = None
        from streams import _native

        if _native.status() == "compiled":
            try:
                codec = importlib.import_module("streams.contracts._avroc")
            except ImportError:
                codec = None
        _CODEC.append(codec)
    return _CODEC[0]

