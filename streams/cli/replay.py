"""``streams replay`` and ``streams state rebuild``: the operator's two ways to rebuild state."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from streams.cli.common import add_kafka_args, kafka_or_embedded, log, number
from streams.errors import ConfigError
from streams.ops import replay as rp
from streams.runtime import gcpolicy
from streams.runtime.rebuild import rebuild
from streams.topology import load


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="rewind a consumer group and rebuild the state it owns")
    p.add_argument("--topology", required=True)
    p.add_argument("--processor", help="which processor of the topology (default: the only one)")
    p.add_argument("--group", help="consumer group (default: <topology>-<processor>)")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-offset", type=number(int, 0), metavar="N")
    start.add_argument("--from-timestamp", type=_timestamp, metavar="T",
                       help="epoch milliseconds or ISO-8601 time (e.g. 2026-12-01T08:00:00+00:00)")
    start.add_argument("--from-beginning", action="store_true")
    p.add_argument("--topic", action="append", help="only this input topic (repeatable)")
    p.add_argument("--partitions", type=number(int, 0), nargs="+", metavar="P")
    p.add_argument("--keep-state", action="store_true", help="rewind offsets only; dedupe skips applied records")
    p.add_argument("--dry-run", action="store_true", help="show the plan and change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--follow", action="store_true", help="show progress with an ETA while workers catch up")
    add_kafka_args(p)
    p.set_defaults(func=run)

    s = sub.add_parser("state", help="local state stores")
    ssub = s.add_subparsers(dest="state_cmd", metavar="ACTION")
    ssub.required = True
    r = ssub.add_parser("rebuild", help="restore a worker's stores from the changelog alone")
    r.add_argument("--topology", required=True)
    r.add_argument("--processor")
    r.add_argument("--group")
    r.add_argument("--state-dir", required=True, help="the (stopped) worker's state directory")
    r.add_argument("--partitions", type=number(int, 0), nargs="+", metavar="P", help="default: all")
    add_kafka_args(r)
    r.set_defaults(func=run_rebuild)


def _timestamp(text: str) -> int:
    """An argparse ``type``: checked while parsing, so a bad value is refused before any broker is asked."""
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epoch milliseconds or an ISO-8601 time, got {text!r}") from None


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
        print("replay: offsets rewound" + ("" if args.keep_state else ", reset markers written") +
              "; start the workers to reprocess")
        if args.follow:
            rp.follow(kafka, group, rows, log)
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    topo = load(args.topology)
    proc = topo.processor(args.processor)
    group = args.group or topo.default_group(proc)
    parts = args.partitions or range(topo.topics[proc.inputs[0]].partitions)
    gcpolicy.tune()
    with kafka_or_embedded(args) as kafka:
        hashes = rebuild(kafka, group, list(proc.inputs), proc.changelog, proc.store, parts, Path(args.state_dir),
                         log, progress=lambda done: None)
    for p, h in sorted(hashes.items()):
        print(f"partition {p}: rebuilt, state hash {h[:16]}")
    return 0
