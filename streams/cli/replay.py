"""``streams replay`` and ``streams state rebuild``: the operator's two ways to rebuild state."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.common import OPERATE, app, confirm, emit_json, examples, kafka_or_embedded, log
from streams.cli.options import BadValue, Bootstrap, Group, Processor, TopologyFile, Yes, exactly_one, flag, number
from streams.cli.progress import progress
from streams.errors import ConfigError
from streams.ops import replay as rp
from streams.runtime import gcpolicy
from streams.runtime.rebuild import rebuild
from streams.topology import load

Partitions = Annotated[list[int] | None, typer.Option(parser=number(int, 0), metavar="P",
                                                      help="only these partitions (several may follow the flag)")]
START = "Where to start (one of)"


def _timestamp(text: str) -> int:
    """A typer ``parser``: checked while parsing, so a bad value is refused before any broker is asked."""
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise BadValue(f"expected epoch milliseconds or an ISO-8601 time, got {text!r}") from None


@app.command(rich_help_panel=OPERATE, epilog=examples(
    "streams replay --topology orders --processor orchestrator --from-beginning --dry-run",
    "streams replay --topology orders --from-timestamp 2026-12-01T08:00:00+00:00 --yes --follow"))
def replay(
    topology: TopologyFile, processor: Processor = None, group: Group = None,
    from_offset: Annotated[int | None, typer.Option(parser=number(int, 0), metavar="N", rich_help_panel=START,
                                                    help="this offset of every partition")] = None,
    from_timestamp: Annotated[int | None, typer.Option(
        parser=_timestamp, metavar="T", rich_help_panel=START,
        help="epoch milliseconds or ISO-8601 time (e.g. 2026-12-01T08:00:00+00:00)")] = None,
    from_beginning: Annotated[bool, flag("--from-beginning", "the log's start", START)] = False,
    topic: Annotated[list[str] | None, typer.Option(help="only this input topic (repeatable)")] = None,
    partitions: Partitions = None,
    keep_state: Annotated[bool, flag("--keep-state", "rewind offsets only; dedupe skips applied records")] = False,
    dry_run: Annotated[bool, flag("--dry-run", "show the plan and change nothing")] = False,
    yes: Yes = False,
    follow: Annotated[bool, flag("--follow", "show progress while workers catch up")] = False,
    json: Annotated[bool, flag("--json", "print the plan as one JSON object")] = False,
    bootstrap: Bootstrap = None,
) -> int:
    """Rewind a consumer group and rebuild the state it owns."""
    exactly_one("--from-offset/--from-timestamp/--from-beginning", from_offset, from_timestamp, from_beginning)
    topo = load(topology)
    proc = topo.processor(processor)
    group = group or topo.default_group(proc)
    topics = topic or list(proc.inputs)
    unknown = set(topics) - set(proc.inputs)
    if unknown:
        raise ConfigError(f"--topic {sorted(unknown)} is not an input of processor {proc.name}")
    wiped = None if keep_state else proc.changelog
    with kafka_or_embedded(bootstrap) as kafka:
        members = rp.live_members(kafka, group)
        if members:
            raise ConfigError(f"group {group} has live members, stop its workers first: {', '.join(members)}")
        rows = rp.plan(kafka, group, topics, partitions, from_offset, from_timestamp)
        if json:
            emit_json({"group": group, "state_wiped": wiped,
                       "partitions": [{"topic": r.topic, "partition": r.partition, "committed": r.committed,
                                       "new_offset": r.new_offset, "log_end": r.log_end,
                                       "to_reprocess": r.to_reprocess} for r in rows],
                       "total": sum(r.to_reprocess for r in rows)})
        else:
            print(f"replay plan for group {group}" + (" (state kept)" if keep_state else f" (state wiped: {wiped})"))
            for r in rows:
                print(f"  {r.topic}[{r.partition}]  committed {'-' if r.committed is None else r.committed} -> "
                      f"{r.new_offset}   {r.to_reprocess} records to reprocess")
            print(f"  total {sum(r.to_reprocess for r in rows)} records")
        if dry_run:
            return 0
        if not confirm(yes, "proceed?", "replay changes offsets and wipes state: pass --yes when not at a terminal",
                       "nothing changed"):
            return 1
        rp.apply(kafka, group, rows, wiped)
        done = ("replay: offsets rewound" + ("" if keep_state else ", reset markers written") +
                "; start the workers to reprocess")
        (log if json else print)(done)  # with --json, stdout holds only the plan
        if follow:
            with progress() as bar:
                rp.follow(kafka, group, rows, bar)
    return 0


state = typer.Typer(help="Local state stores.", no_args_is_help=True,
                    epilog=examples("streams state rebuild --topology orders --state-dir .streams/state/x"))
app.add_typer(state, name="state", rich_help_panel=OPERATE)


@state.command("rebuild", epilog=examples(
    "streams state rebuild --topology orders --processor orchestrator --state-dir /var/lib/streams/o1",
    "streams state rebuild --topology counter --state-dir ./state --partitions 0 1"))
def rebuild_(
    topology: TopologyFile,
    state_dir: Annotated[str, typer.Option(help="the (stopped) worker's state directory")],
    processor: Processor = None, group: Group = None, partitions: Partitions = None,
    json: Annotated[bool, flag("--json", "print one JSON object: partition -> state hash")] = False,
    bootstrap: Bootstrap = None,
) -> int:
    """Restore a worker's stores from the changelog alone."""
    topo = load(topology)
    proc = topo.processor(processor)
    parts = partitions or range(topo.topics[proc.inputs[0]].partitions)
    gcpolicy.tune()
    with kafka_or_embedded(bootstrap) as kafka, progress() as bar:
        hashes = rebuild(kafka, group or topo.default_group(proc), list(proc.inputs), proc.changelog, proc.store,
                         parts, Path(state_dir), log, progress=bar)
    if json:
        return emit_json({str(p): h for p, h in sorted(hashes.items())})
    for p, h in sorted(hashes.items()):
        print(f"partition {p}: rebuilt, state hash {h[:16]}")
    return 0
