"""``streams replay`` and ``streams state rebuild``: the operator's two ways to rebuild state."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from streams.cli.common import OPERATE, BadValue, Bootstrap, examples, flag, kafka_or_embedded, log, namespace, number
from streams.cli.progress import progress
from streams.errors import ConfigError
from streams.ops import replay as rp
from streams.runtime import gcpolicy
from streams.runtime.rebuild import rebuild
from streams.topology import load

Topology = Annotated[str, typer.Option(help="topology YAML file, or a built-in example")]
Processor = Annotated[str | None, typer.Option(help="which processor of the topology (default: the only one)")]
Group = Annotated[str | None, typer.Option(help="consumer group (default: <topology>-<processor>)")]
Partitions = Annotated[list[int] | None, typer.Option(parser=number(int, 0), metavar="P",
                                                      help="only these partitions (several may follow the flag)")]
START = "Where to start (one of)"


def add(app: typer.Typer) -> None:
    @app.command(rich_help_panel=OPERATE, epilog=examples(
        "streams replay --topology orders --processor orchestrator --from-beginning --dry-run",
        "streams replay --topology orders --from-timestamp 2026-12-01T08:00:00+00:00 --yes --follow"))
    def replay(
        topology: Topology, processor: Processor = None, group: Group = None,
        from_offset: Annotated[int | None, typer.Option(parser=number(int, 0), metavar="N", rich_help_panel=START,
                                                        help="this offset of every partition")] = None,
        from_timestamp: Annotated[int | None, typer.Option(
            parser=_timestamp, metavar="T", rich_help_panel=START,
            help="epoch milliseconds or ISO-8601 time (e.g. 2026-12-01T08:00:00+00:00)")] = None,
        from_beginning: Annotated[bool, flag("--from-beginning", "the log's start", START)] = False,
        topic: Annotated[list[str] | None, typer.Option(help="only this input topic (repeatable)")] = None,
        partitions: Partitions = None,
        keep_state: Annotated[bool, flag("--keep-state", "rewind offsets only; dedupe skips applied records")]
        = False,
        dry_run: Annotated[bool, flag("--dry-run", "show the plan and change nothing")] = False,
        yes: Annotated[bool, flag("--yes", "do not ask for confirmation")] = False,
        follow: Annotated[bool, flag("--follow", "show progress while workers catch up")] = False,
        json: Annotated[bool, flag("--json", "print the plan as one JSON object")] = False,
        bootstrap: Bootstrap = None,
    ) -> int:
        """Rewind a consumer group and rebuild the state it owns."""
        if [from_offset is not None, from_timestamp is not None, from_beginning].count(True) != 1:
            raise BadValue("give exactly one of them", param_hint="--from-offset/--from-timestamp/--from-beginning")
        return run(namespace(topology=topology, processor=processor, group=group, from_offset=from_offset,
                             from_timestamp=from_timestamp, from_beginning=from_beginning, topic=topic,
                             partitions=partitions, keep_state=keep_state, dry_run=dry_run, yes=yes, follow=follow,
                             json=json, bootstrap=bootstrap))

    state = typer.Typer(help="Local state stores.", no_args_is_help=True,
                        epilog=examples("streams state rebuild --topology orders --state-dir .streams/state/x"))
    app.add_typer(state, name="state", rich_help_panel=OPERATE)

    @state.command("rebuild", epilog=examples(
        "streams state rebuild --topology orders --processor orchestrator --state-dir /var/lib/streams/o1",
        "streams state rebuild --topology counter --state-dir ./state --partitions 0 1"))
    def rebuild_(
        topology: Topology,
        state_dir: Annotated[str, typer.Option(help="the (stopped) worker's state directory")],
        processor: Processor = None, group: Group = None, partitions: Partitions = None,
        json: Annotated[bool, flag("--json", "print one JSON object: partition -> state hash")] = False,
        bootstrap: Bootstrap = None,
    ) -> int:
        """Restore a worker's stores from the changelog alone."""
        return run_rebuild(namespace(topology=topology, processor=processor, group=group, state_dir=state_dir,
                                     partitions=partitions, json=json, bootstrap=bootstrap))


def _timestamp(text: str) -> int:
    """A typer ``parser``: checked while parsing, so a bad value is refused before any broker is asked."""
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise BadValue(f"expected epoch milliseconds or an ISO-8601 time, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    topo = load(args.topology)
    proc = topo.processor(args.processor)
    group = args.group or topo.default_group(proc)
    topics = args.topic or list(proc.inputs)
    unknown = set(topics) - set(proc.inputs)
    if unknown:
        raise ConfigError(f"--topic {sorted(unknown)} is not an input of processor {proc.name}")
    with kafka_or_embedded(args) as kafka:
        members = rp.live_members(kafka, group)
        if members:
            raise ConfigError(f"group {group} has live members, stop its workers first: {', '.join(members)}")
        rows = rp.plan(kafka, group, topics, args.partitions, args.from_offset,
                       args.from_timestamp)
        if args.json:
            sys.stdout.write(orjson.dumps({
                "group": group, "state_wiped": None if args.keep_state else proc.changelog,
                "partitions": [{"topic": r.topic, "partition": r.partition, "committed": r.committed,
                                "new_offset": r.new_offset, "log_end": r.log_end, "to_reprocess": r.to_reprocess}
                               for r in rows],
                "total": sum(r.to_reprocess for r in rows)}).decode() + "\n")
            sys.stdout.flush()
        else:
            print(f"replay plan for group {group}" + (" (state kept)" if args.keep_state else
                                                        f" (state wiped: {proc.changelog})"))
            for r in rows:
                print(f"  {r.topic}[{r.partition}]  committed {'-' if r.committed is None else r.committed} -> "
                      f"{r.new_offset}   {r.to_reprocess} records to reprocess")
            print(f"  total {sum(r.to_reprocess for r in rows)} records")
        if args.dry_run:
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise ConfigError("replay changes offsets and wipes state: pass --yes when not at a terminal")
            if input("proceed? [y/N] ").strip().lower() != "y":
                print("nothing changed")
                return 1
        rp.apply(kafka, group, rows, None if args.keep_state else proc.changelog)
        done = ("replay: offsets rewound" + ("" if args.keep_state else ", reset markers written") +
                "; start the workers to reprocess")
        if args.json:
            log(done)
        else:
            print(done)
        if args.follow:
            with progress() as bar:
                rp.follow(kafka, group, rows, bar)
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    topo = load(args.topology)
    proc = topo.processor(args.processor)
    group = args.group or topo.default_group(proc)
    parts = args.partitions or range(topo.topics[proc.inputs[0]].partitions)
    gcpolicy.tune()
    with kafka_or_embedded(args) as kafka, progress() as bar:
        hashes = rebuild(kafka, group, list(proc.inputs), proc.changelog, proc.store, parts, Path(args.state_dir),
                         log, progress=bar)
    if args.json:
        sys.stdout.write(orjson.dumps({str(p): h for p, h in sorted(hashes.items())}).decode() + "\n")
        return 0
    for p, h in sorted(hashes.items()):
        print(f"partition {p}: rebuilt, state hash {h[:16]}")
    return 0
