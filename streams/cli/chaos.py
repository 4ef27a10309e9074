"""``streams chaos``: the seeded fault-injection run of the order saga (see :mod:`streams.lab.chaos`).

It always runs on brokers of its own, an embedded one or (``--kafka3``) a three-node Apache Kafka cluster: it
pauses and kills them, and the saga's topic names are fixed, so it never touches ``$KAFKA_BOOTSTRAP_SERVERS``.
Exit status 0 when every invariant holds, 1 when one does not (the seed to reproduce it is printed), 2 for a
bad argument.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from streams.cli.common import MEASURE, app, emit_json, examples, log
from streams.cli.options import choice, flag, number, one_of
from streams.cli.progress import phases, progress
from streams.config import AT_LEAST_ONCE, EXACTLY_ONCE, GUARANTEES
from streams.errors import ConfigError


@app.command(rich_help_panel=MEASURE, epilog=examples(
    "streams chaos --quick --seed 53", "streams chaos --kafka3 --guarantee exactly_once --json > report.json"))
def chaos(
    orders: Annotated[int | None, typer.Option(parser=number(int, 200, 1_000_000), help="orders to place "
                                               "(default 5,000; --quick: 1,000)")] = None,
    seed: Annotated[int, typer.Option(parser=number(int), help="seeds the workload, the failures and the fault "
                                      "schedule")] = 1,
    quick: Annotated[bool, flag("--quick", "a short run (~1,000 orders, >= 4 kills, every poison class, every "
                                "fault point) for the test suite")] = False,
    kafka3: Annotated[bool, flag("--kafka3", "run on a private three-node Apache Kafka cluster (replication 3, "
                                 "min.insync.replicas=2) and add broker faults: SIGKILLs of one node at a time, "
                                 "the active controller first, and a node paused past its session")] = False,
    guarantee: Annotated[str, typer.Option(parser=choice(*GUARANTEES), metavar=one_of(*GUARANTEES),
                                           help="the workers' processing guarantee (exactly_once needs "
                                                "--kafka3)")] = AT_LEAST_ONCE,
    json: Annotated[bool, flag("--json", "print the report as one JSON object")] = False,
    keep: Annotated[str | None, typer.Option(metavar="DIR", help="keep logs and state directories in DIR "
                                             "(default: a temporary directory, removed at the end)")] = None,
) -> int:
    """A seeded fault-injection run of the order saga that proves nothing is lost."""
    from streams.lab.chaos import run as run_chaos  # here: every `streams` process imports this module
    from streams.lab.chaos_plan import Profile

    if guarantee == EXACTLY_ONCE and not kafka3:
        raise ConfigError("--guarantee exactly_once needs --kafka3: the embedded broker cannot do transactions")
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        log("chaos: ignoring KAFKA_BOOTSTRAP_SERVERS: the run needs private brokers it can pause and kill")
    profile = Profile.quick(orders or 1000) if quick else Profile.default(orders or 5000)
    if kafka3:
        profile = profile.on_kafka3(exactly_once=guarantee == EXACTLY_ONCE)
    # SIGTERM unwinds like Ctrl-C, so the run stops the processes it started instead of orphaning them.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with progress() as bar:
        report = run_chaos(seed, profile, phases(bar, _phase), Path(keep) if keep else None, quick=quick)
    if json:
        emit_json(report)
    else:
        _print(report)
    if not report["passed"]:
        print(f"streams chaos: FAILED with seed {report['seed']}; reproduce with: {report['reproduce']}",
              file=sys.stderr)
        return 1
    return 0


# The run's messages that begin its phases, and the phases' names.
PHASES = (("chaos: three-node Apache Kafka on", "chaos: starting the brokers and the six processes"),
          ("chaos: embedded broker on", "chaos: starting the broker and the six processes"),
          ("chaos: all six processes are processing", "chaos: workload and fault schedule"),
          ("chaos: last fault ended", "chaos: draining after the last fault"),
          ("chaos: all processes stopped", "chaos: checking the invariants"))


def _phase(msg: str) -> str | None:
    return next((name for start, name in PHASES if msg.startswith(start)), None)


def _print(r: dict[str, Any]) -> None:
    print(f"streams chaos: seed {r['seed']}, {r['orders']} orders, {r['broker']}, {r['guarantee']}, "
          f"{r['elapsed_s']} s")
    print(f"  faults          {r['kills']} SIGKILLs, fault points hit: {', '.join(r['fault_points_hit']) or 'none'}")
    b = r["broker_faults"]
    print(f"  broker faults   {b['kills']} node SIGKILLs ({b['controller_kills']} of the active controller), "
          f"{b['pauses']} pauses; {r['fenced_exits']} workers ended fenced and were restarted")
    print(f"  outcomes        {r['outcomes']}")
    print(f"  lost            {r['lost']}   wrong outcome {r['wrong_outcomes']}")
    print(f"  effects         {r['duplicate_effects']} duplicate, {r['effect_mismatches']} mismatched; "
          f"{r['refunds']} refunds for {r['compensated_charges']} compensated charges")
    print(f"  dead letters    {r['dlq_actual']} of {r['dlq_expected']} expected (precision {r['dlq_precision']}, "
          f"recall {r['dlq_recall']})")
    print(f"  state           {r['state_mismatches']} of {r['state_partitions_compared']} partitions differ "
          "from their changelog rebuild")
    print(f"  offsets         {r['offset_gaps']} input partitions with committed != log end; drained "
          f"{r['drain_s']} s after the last fault")
    for f in r["failures"]:
        print(f"  FAILED          {f}")
    print("  PASSED" if r["passed"] else "  FAILED")
