"""``streams dlq list|show|replay``: inspect dead letters and put them back on their origin topic."""

from __future__ import annotations

import argparse
import sys

import orjson

from streams.cli.common import add_kafka_args, kafka_or_embedded, number
from streams.errors import ConfigError
from streams.ops.dlq import DeadLetter, read, replay
from streams.topology import load


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dlq", help="inspect and replay dead letters")
    dsub = p.add_subparsers(dest="dlq_cmd", metavar="ACTION")
    dsub.required = True
    for name, func, text in (("list", list_, "list dead letters"), ("show", show, "show one dead letter"),
                             ("replay", replay_, "re-produce dead letters to their origin topic")):
        a = dsub.add_parser(name, help=text)
        where = a.add_mutually_exclusive_group(required=True)
        where.add_argument("--topology", help="topology file (its dlq_topic)")
        where.add_argument("--topic", help="the dead-letter topic")
        add_kafka_args(a)
        a.set_defaults(func=func)
        if name in ("list", "replay"):
            a.add_argument("--reason", help="only this reason (e.g. invalid_transition, decode_error)")
            a.add_argument("--origin-topic", help="only records that came from this topic")
        if name == "list":
            a.add_argument("--json", action="store_true")
            a.add_argument("--limit", type=number(int, 1), default=100)
        if name == "show":
            a.add_argument("position", help="PARTITION/OFFSET in the dead-letter topic, e.g. 0/42")
        if name == "replay":
            a.add_argument("--positions", nargs="*", help="only these PARTITION/OFFSET positions")
            a.add_argument("--dry-run", action="store_true", help="say what would be replayed")
            a.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _topic(args: argparse.Namespace) -> str:
    return str(args.topic) if args.topic else load(args.topology).dlq_topic


def _select(args: argparse.Namespace, letters: list[DeadLetter]) -> list[DeadLetter]:
    out = [d for d in letters if (not args.reason or d.h("dlq-reason") == args.reason)
           and (not args.origin_topic or d.origin[0] == args.origin_topic)]
    positions = getattr(args, "positions", None)
    if positions:
        wanted = {_position(p) for p in positions}
        out = [d for d in out if (d.partition, d.offset) in wanted]
    return out


def _position(text: str) -> tuple[int, int]:
    part, _, off = text.partition("/")
    try:
        return int(part), int(off)
    except ValueError:
        raise ConfigError(f"position {text!r}: expected PARTITION/OFFSET, e.g. 0/42") from None


def list_(args: argparse.Namespace) -> int:
    topic = _topic(args)  # a bad topology file is reported before any broker is asked
    with kafka_or_embedded(args) as kafka:
        letters = _select(args, list(read(kafka, topic)))
    rows = [d.summary() for d in letters[: args.limit]]
    if args.json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return 0
    for r in rows:
        print(f"{r['dlq_partition']}/{r['dlq_offset']}\t{r['reason']}\t{r['origin_topic']}[{r['origin_partition']}]"
              f"@{r['origin_offset']}\tkey={r['key']}\t{r['message']}")
    print(f"{len(letters)} dead letter(s)" + (f", first {args.limit} shown" if len(letters) > args.limit else ""))
    return 0


def show(args: argparse.Namespace) -> int:
    wanted, topic = _position(args.position), _topic(args)
    with kafka_or_embedded(args) as kafka:
        found = [d for d in read(kafka, topic) if (d.partition, d.offset) == wanted]
    if not found:
        raise ConfigError(f"no dead letter at {args.position} in {topic}")
    d = found[0]
    out = d.summary()
    out["headers"] = {k: v.decode("utf-8", "replace") for k, v in d.headers}
    out["value_hex"] = (d.value or b"").hex()
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def replay_(args: argparse.Namespace) -> int:
    topic = _topic(args)
    with kafka_or_embedded(args) as kafka:
        letters = _select(args, list(read(kafka, topic)))
        for d in letters:
            s = d.summary()
            print(f"replay {s['dlq_partition']}/{s['dlq_offset']} ({s['reason']}) -> {s['origin_topic']} "
                  f"key={s['key']}")
        if args.dry_run or not letters:
            print(f"{len(letters)} dead letter(s) would be replayed" if args.dry_run else "nothing to replay")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise ConfigError("replay needs --yes when not run from a terminal")
            if input(f"replay {len(letters)} dead letter(s)? [y/N] ").strip().lower() != "y":
                print("nothing replayed")
                return 1
        n = replay(kafka, letters)
    print(f"replayed {n} dead letter(s)")
    return 0
