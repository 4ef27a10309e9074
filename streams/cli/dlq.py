"""``streams dlq list|show|replay``: inspect dead letters and put them back on their origin topic."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.common import OPERATE, app, confirm, emit_json, examples, kafka_or_embedded
from streams.cli.options import Bootstrap, Yes, exactly_one, flag, number
from streams.cli.progress import progress
from streams.errors import ConfigError
from streams.ops.dlq import DeadLetter, read, replay
from streams.topology import load

WHERE = "Which dead-letter topic (one of)"
Topology = Annotated[str | None, typer.Option(help="topology file (its dlq_topic)", rich_help_panel=WHERE)]
Topic = Annotated[str | None, typer.Option(help="the dead-letter topic", rich_help_panel=WHERE)]
Reason = Annotated[str | None, typer.Option(help="only this reason (e.g. invalid_transition, decode_error)")]
Origin = Annotated[str | None, typer.Option(help="only records that came from this topic")]

dlq = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True,
                  epilog=examples("streams dlq list --topology orders --reason decode_error",
                                  "streams dlq replay --topic orders.dlq --positions 0/42 0/43 --yes"))
app.add_typer(dlq, name="dlq", rich_help_panel=OPERATE)


def _topic(topology: str | None, topic: str | None) -> str:
    """The dead-letter topic named either way; a bad topology file is reported before any broker is asked."""
    exactly_one("--topology/--topic", topology, topic)
    return topic or load(str(topology)).dlq_topic


def _select(letters: list[DeadLetter], reason: str | None, origin_topic: str | None,
            positions: list[str] | None = None) -> list[DeadLetter]:
    wanted = {_position(p) for p in positions or []}
    return [d for d in letters if (not reason or d.h("dlq-reason") == reason)
            and (not origin_topic or d.origin[0] == origin_topic) and (not wanted or (d.partition, d.offset) in wanted)]


def _position(text: str) -> tuple[int, int]:
    part, _, off = text.partition("/")
    try:
        return int(part), int(off)
    except ValueError:
        raise ConfigError(f"position {text!r}: expected PARTITION/OFFSET, e.g. 0/42") from None


@dlq.command("list", epilog=examples("streams dlq list --topic orders.dlq --json --limit 10"))
def list_(topology: Topology = None, topic: Topic = None, reason: Reason = None, origin_topic: Origin = None,
          json: Annotated[bool, flag("--json", "print a JSON array of dead letters")] = False,
          limit: Annotated[int, typer.Option(parser=number(int, 1), help="at most this many")] = 100,
          bootstrap: Bootstrap = None) -> int:
    """List dead letters."""
    where = _topic(topology, topic)
    with kafka_or_embedded(bootstrap) as kafka:
        letters = _select(list(read(kafka, where)), reason, origin_topic)
    rows = [d.summary() for d in letters[:limit]]
    if json:
        return emit_json(rows)
    for r in rows:
        print(f"{r['dlq_partition']}/{r['dlq_offset']}\t{r['reason']}\t{r['origin_topic']}[{r['origin_partition']}]"
              f"@{r['origin_offset']}\tkey={r['key']}\t{r['message']}")
    print(f"{len(letters)} dead letter(s)" + (f", first {limit} shown" if len(letters) > limit else ""))
    return 0


@dlq.command("show", epilog=examples("streams dlq show 0/42 --topology orders"))
def show(position: Annotated[str, typer.Argument(help="PARTITION/OFFSET in the dead-letter topic, e.g. 0/42")],
         topology: Topology = None, topic: Topic = None, bootstrap: Bootstrap = None) -> int:
    """Show one dead letter (JSON: summary, headers, value)."""
    where = _topic(topology, topic)
    wanted = _position(position)
    with kafka_or_embedded(bootstrap) as kafka:
        found = [d for d in read(kafka, where) if (d.partition, d.offset) == wanted]
    if not found:
        raise ConfigError(f"no dead letter at {position} in {where}")
    out = found[0].summary()
    out["headers"] = {k: v.decode("utf-8", "replace") for k, v in found[0].headers}
    out["value_hex"] = (found[0].value or b"").hex()
    return emit_json(out, indent=True)


@dlq.command("replay", epilog=examples("streams dlq replay --topology orders --reason decode_error --dry-run"))
def replay_(topology: Topology = None, topic: Topic = None, reason: Reason = None, origin_topic: Origin = None,
            positions: Annotated[list[str] | None, typer.Option(
                metavar="P/O", help="only these PARTITION/OFFSET positions (several may follow the flag)")] = None,
            dry_run: Annotated[bool, flag("--dry-run", "say what would be replayed")] = False,
            yes: Yes = False, bootstrap: Bootstrap = None) -> int:
    """Re-produce dead letters to their origin topic."""
    where = _topic(topology, topic)
    with kafka_or_embedded(bootstrap) as kafka:
        letters = _select(list(read(kafka, where)), reason, origin_topic, positions)
        for d in letters:
            s = d.summary()
            print(f"replay {s['dlq_partition']}/{s['dlq_offset']} ({s['reason']}) -> {s['origin_topic']} "
                  f"key={s['key']}")
        if dry_run or not letters:
            print(f"{len(letters)} dead letter(s) would be replayed" if dry_run else "nothing to replay")
            return 0
        if not confirm(yes, f"replay {len(letters)} dead letter(s)?",
                       "replay needs --yes when not run from a terminal", "nothing replayed"):
            return 1
        with progress() as bar:
            n = replay(kafka, letters, progress=bar)
    print(f"replayed {n} dead letter(s)")
    return 0
