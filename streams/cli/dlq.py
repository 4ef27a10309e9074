"""``streams dlq list|show|replay``: inspect dead letters and put them back on their origin topic."""

from __future__ import annotations

import argparse
import sys
from typing import Annotated, Any

import orjson
import typer

from streams.cli.common import OPERATE, BadValue, Bootstrap, examples, flag, kafka_or_embedded, namespace, number
from streams.cli.progress import progress
from streams.errors import ConfigError
from streams.ops.dlq import DeadLetter, read, replay
from streams.topology import load

WHERE = "Which dead-letter topic (one of)"


Topology = Annotated[str | None, typer.Option(help="topology file (its dlq_topic)", rich_help_panel=WHERE)]
Topic = Annotated[str | None, typer.Option(help="the dead-letter topic", rich_help_panel=WHERE)]
Reason = Annotated[str | None, typer.Option(help="only this reason (e.g. invalid_transition, decode_error)")]
Origin = Annotated[str | None, typer.Option(help="only records that came from this topic")]


def add(app: typer.Typer) -> None:
    dlq = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True,
                      epilog=examples("streams dlq list --topology orders --reason decode_error",
                                      "streams dlq replay --topic orders.dlq --positions 0/42 0/43 --yes"))
    app.add_typer(dlq, name="dlq", rich_help_panel=OPERATE)

    @dlq.command("list", epilog=examples("streams dlq list --topic orders.dlq --json --limit 10"))
    def list_cmd(topology: Topology = None, topic: Topic = None, reason: Reason = None, origin_topic: Origin = None,
                 json: Annotated[bool, flag("--json", "print a JSON array of dead letters")] = False,
                 limit: Annotated[int, typer.Option(parser=number(int, 1), help="at most this many")] = 100,
                 bootstrap: Bootstrap = None) -> int:
        """List dead letters."""
        return list_(_args(topology, topic, reason=reason, origin_topic=origin_topic, json=json, limit=limit,
                           bootstrap=bootstrap))

    @dlq.command("show", epilog=examples("streams dlq show 0/42 --topology orders"))
    def show_(position: Annotated[str, typer.Argument(help="PARTITION/OFFSET in the dead-letter topic, e.g. 0/42")],
              topology: Topology = None, topic: Topic = None, bootstrap: Bootstrap = None) -> int:
        """Show one dead letter (JSON: summary, headers, value)."""
        return show(_args(topology, topic, position=position, bootstrap=bootstrap))

    @dlq.command("replay", epilog=examples("streams dlq replay --topology orders --reason decode_error --dry-run"))
    def replay_cmd(topology: Topology = None, topic: Topic = None, reason: Reason = None, origin_topic: Origin = None,
                   positions: Annotated[list[str] | None, typer.Option(
                       metavar="P/O", help="only these PARTITION/OFFSET positions (several may follow the flag)")]
                   = None,
                   dry_run: Annotated[bool, flag("--dry-run", "say what would be replayed")] = False,
                   yes: Annotated[bool, flag("--yes", "do not ask for confirmation")] = False,
                   bootstrap: Bootstrap = None) -> int:
        """Re-produce dead letters to their origin topic."""
        return replay_(_args(topology, topic, reason=reason, origin_topic=origin_topic, positions=positions,
                             dry_run=dry_run, yes=yes, bootstrap=bootstrap))


def _args(topology: str | None, topic: str | None, **values: Any) -> argparse.Namespace:
    if (topology is None) == (topic is None):
        raise BadValue("give exactly one of them", param_hint="--topology/--topic")
    return namespace(topology=topology, topic=topic, **values)


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
        with progress() as bar:
            n = replay(kafka, letters, progress=bar)
    print(f"replayed {n} dead letter(s)")
    return 0
