"""``streams demo``: the order saga end to end on the embedded default (``--example loan``: the loan
application; ``--counter``: the runtime alone).

The command brings the broker and the schema registry (embedded unless given), a progress bar and the
processes' command lines; the drivers in :mod:`streams.lab.demo` run the example and return the summary it prints.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from streams.cli.common import RUN, app, bootstrap_given, examples, kafka_or_embedded, log, registry_or_embedded
from streams.cli.options import SHARE, Bootstrap, choice, flag, number, one_of
from streams.cli.progress import progress
from streams.lab import demo_counter, demo_loan
from streams.lab.demo import saga

ORDERS_PANEL, COUNTER_PANEL = "The order saga (default)", "--counter: the runtime-only counter"


@app.command(rich_help_panel=RUN, epilog=examples(
    "streams demo --orders 500 --rate 100", "streams demo --example loan --loans 20",
    "streams demo --counter --records 10000 --workers 3"))
def demo(
    example: Annotated[str, typer.Option(parser=choice("orders", "loan"), metavar=one_of("orders", "loan"),
                                         help="which example: the order saga, or the loan application with "
                                              "simulated reviewers")] = "orders",
    loans: Annotated[int, typer.Option(parser=number(int, 1, 100_000), help="--example loan: applications")] = 60,
    orders: Annotated[int, typer.Option(help="orders to place", rich_help_panel=ORDERS_PANEL)] = 2000,
    rate: Annotated[float, typer.Option(help="orders per second", rich_help_panel=ORDERS_PANEL)] = 200.0,
    orchestrators: Annotated[int, typer.Option(help="orchestrator worker processes",
                                               rich_help_panel=ORDERS_PANEL)] = 1,
    transient_rate: Annotated[float, typer.Option(parser=SHARE, help="payment attempts failing TRANSIENT",
                                                  rich_help_panel=ORDERS_PANEL)] = 0.10,
    permanent_rate: Annotated[float, typer.Option(parser=SHARE, help="payments failing PERMANENT",
                                                  rich_help_panel=ORDERS_PANEL)] = 0.03,
    shortage_rate: Annotated[float, typer.Option(parser=SHARE, help="orders out of stock",
                                                 rich_help_panel=ORDERS_PANEL)] = 0.05,
    shipping_failure_rate: Annotated[float, typer.Option(parser=SHARE, help="labels failing PERMANENT",
                                                         rich_help_panel=ORDERS_PANEL)] = 0.02,
    no_answer_rate: Annotated[float, typer.Option(parser=SHARE, help="payments never answered",
                                                  rich_help_panel=ORDERS_PANEL)] = 0.01,
    payment_timeout_ms: Annotated[int, typer.Option(rich_help_panel=ORDERS_PANEL)] = 5000,
    counter: Annotated[bool, flag("--counter", "run the runtime-only counter demo instead", COUNTER_PANEL)] = False,
    records: Annotated[int, typer.Option(help="records to generate", rich_help_panel=COUNTER_PANEL)] = 50_000,
    keys: Annotated[int, typer.Option(help="distinct keys", rich_help_panel=COUNTER_PANEL)] = 1_000,
    poison: Annotated[int, typer.Option(help="undecodable records mixed in", rich_help_panel=COUNTER_PANEL)] = 5,
    workers: Annotated[int, typer.Option(help="worker processes", rich_help_panel=COUNTER_PANEL)] = 2,
    bootstrap: Bootstrap = None,
) -> int:
    """Run the order-saga demo (or --example loan) on the embedded default."""
    if counter:
        with kafka_or_embedded(bootstrap) as kafka, progress() as bar:
            report = demo_counter.run(kafka, bar, log, records, keys, poison, workers,
                                      fresh_topics=bootstrap_given(bootstrap) is not None)
    elif example == "loan":
        with kafka_or_embedded(bootstrap) as kafka, registry_or_embedded(kafka, "demo") as url, progress() as bar:
            report = demo_loan.run(kafka, url, bar, log, loans)
    else:
        if bootstrap_given(bootstrap) and not os.environ.get("STREAMS_DEMO_SHARED"):
            log("demo: using the Kafka in KAFKA_BOOTSTRAP_SERVERS; the saga's topic names are fixed (orders.*)")
        seed = ["--seed", "1"]
        specs = [(f"orchestrator{i}", ["worker", "--topology", "orders", "--processor", "orchestrator"])
                 for i in range(orchestrators)]
        specs += [
            ("payment", ["service", "payment", *seed, "--transient-rate", str(transient_rate), "--permanent-rate",
                         str(permanent_rate), "--no-answer-rate", str(no_answer_rate)]),
            ("inventory", ["service", "inventory", *seed, "--shortage-rate", str(shortage_rate)]),
            ("shipping", ["service", "shipping", *seed, "--permanent-rate", str(shipping_failure_rate)]),
        ]
        with kafka_or_embedded(bootstrap) as kafka, registry_or_embedded(kafka, "demo") as url, progress() as bar:
            report = saga(kafka, url, bar, log, specs, orders, rate, payment_timeout_ms)
    for line in report.lines:
        print(line)
    return 0 if report.ok else 1
