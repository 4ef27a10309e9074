"""The chaos run's plan: what is written, what is expected in the DLQ, and when each fault strikes -- all from
the seed, with no I/O, so a failing run is reproduced by its seed and the arithmetic is unit-tested.

The input the harness writes to ``orders.events`` is two sequences of :class:`Item`:

* **main**: one OrderPlaced per order (orders whose id starts ``nopay-`` are never answered by the payment
  service), an immediate duplicate of some (same bytes, same ``streams-id``), events for entities that never
  existed, and the poison classes that fail at decoding (garbage/truncated, unknown schema id, incompatible
  writer schema), interleaved at seeded positions;
* **late**, written once its target orders have ended (so their originals were committed long before):
  OrderCompleted records for existing orders (an invalid transition in any state: no rule takes them), and
  re-sent copies of earlier records of finished orders, in pairs per order (its OrderPlaced and its first
  service reply).

**Swapped pairs.** The saga's replies only ever follow the command that caused them, and the harness does not
write replies in the normal course, so it cannot honestly reorder one order's live events. What it can reorder
is what it writes: ``swaps`` adjacent pairs of the generated sequences are exchanged before writing. In the
main sequence that changes the interleaving of different orders, poison and ghosts (and puts some duplicates
before their original); in the late sequence a swap of an order's re-sent pair delivers its service reply
before its OrderPlaced, i.e. one entity's events out of order. Swaps never cross from late to main, so an
invalid-transition record always follows its order's creation. The report counts same-entity swaps.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace

from streams.runtime.faults import COMMIT_POINTS, EOS_POINTS, TIMER_POINTS

ORCHESTRATORS = ("orchestrator0", "orchestrator1", "orchestrator2")
# exactly_once's commit steps, in protocol order: the same five processes each crash at one of them.
EOS_COMMIT_POINTS = ("after_outputs_produced", "after_changelog_produced", *EOS_POINTS, "after_store_write")
# A node of the three-node cluster: "controller" is resolved to the quorum leader when the fault strikes.
CONTROLLER = "controller"
NODES = (1, 2, 3)
SERVICES = ("payment", "inventory", "shipping")
PROCESSES = ORCHESTRATORS + SERVICES

# Poison classes, each with the DLQ reason(s) it must be dead-lettered with.
GARBAGE, UNKNOWN_SCHEMA, INCOMPATIBLE, INVALID, GHOST = (
    "garbage", "unknown_schema_id", "incompatible_schema", "invalid_transition", "unknown_entity")
POISON_CLASSES = (GARBAGE, UNKNOWN_SCHEMA, INCOMPATIBLE, INVALID, GHOST)
# Garbage variants: (what it is, the reason it must get).
GARBAGE_VARIANTS = (("bad magic byte", "unknown_magic_byte"), ("truncated record", "schema_mismatch"),
                    ("shorter than the header", "decode_error"), ("empty value", "decode_error"))
GHOST_EVENTS = ("PaymentCompleted", "PaymentFailed", "InventoryReserved", "ShippingLabelCreated")


@dataclass(frozen=True)
class Profile:
    """Sizes and timings of one run; ``default`` and ``quick`` are the two the CLI offers."""

    orders: int
    no_answer: int
    duplicate_share: float
    swaps: int
    ghosts: int
    garbage: int
    unknown_schema: int
    incompatible: int
    invalid: int
    min_kills: int
    kill_gap_s: tuple[float, float]
    restart_s: tuple[float, float]
    place_s: float
    payment_timeout_ms: int
    reply_timeout_ms: int
    max_poll_ms: int
    broker_pauses: int
    broker_pause_s: float = 10.0
    commit_after: tuple[int, int] = (20, 400)
    timer_after: tuple[int, int] = (3, 30)
    drain_limit_s: float = 90.0
    # Three-node Apache Kafka only: SIGKILLs of one broker at a time (the first the active controller),
    # each restarted after ``broker_down_s``; pauses then stop one broker past its session (9 s).
    broker_kills: int = 0
    broker_down_s: tuple[float, float] = (3, 8)
    exactly_once: bool = False

    @classmethod
    def default(cls, orders: int = 5000) -> Profile:
        return cls(orders=orders, no_answer=100, duplicate_share=0.05, swaps=200, ghosts=50, garbage=150,
                   unknown_schema=50, incompatible=50, invalid=50, min_kills=12, kill_gap_s=(10, 25),
                   restart_s=(1, 5), place_s=150, payment_timeout_ms=60_000, reply_timeout_ms=60_000,
                   max_poll_ms=20_000, broker_pauses=2)

    @classmethod
    def quick(cls, orders: int = 1000) -> Profile:
        return cls(orders=orders, no_answer=20, duplicate_share=0.05, swaps=40, ghosts=10, garbage=24,
                   unknown_schema=8, incompatible=8, invalid=10, min_kills=4, kill_gap_s=(6, 10),
                   restart_s=(1, 3), place_s=30, payment_timeout_ms=40_000, reply_timeout_ms=40_000,
                   max_poll_ms=12_000, broker_pauses=1, commit_after=(10, 120), timer_after=(2, 12))


    def on_kafka3(self, exactly_once: bool = False) -> Profile:
        """This profile on a three-node cluster: broker kills (3 by default, 1 quick) and broker pauses past
        the broker session instead of whole-broker pauses; ``exactly_once`` arms that protocol's steps."""
        # Commits are fewer on Kafka (larger batches), so the fault points are armed nearer to be reached. The
        # saga's timeouts must outlast any outage the schedule makes, and a service's outages stack longer here:
        # three SIGKILLs of one service, a dead member keeping its partitions for a session, then a transaction
        # coordinator on a paused node kept a quick run's payments unanswered for over 40 s (seed 3).
        timeout_ms = max(self.payment_timeout_ms, 60_000)
        return replace(self, broker_kills=3 if self.min_kills >= 12 else 1, broker_pause_s=14.0,
                       exactly_once=exactly_once, commit_after=(self.commit_after[0], self.commit_after[1] // 3),
                       payment_timeout_ms=timeout_ms, reply_timeout_ms=max(self.reply_timeout_ms, timeout_ms))

    @property
    def commit_points(self) -> tuple[str, ...]:
        return EOS_COMMIT_POINTS if self.exactly_once else COMMIT_POINTS

    @property
    def points(self) -> tuple[str, ...]:
        """Every fault point the run must reach."""
        return self.commit_points + TIMER_POINTS


@dataclass(frozen=True)
class Item:
    """One record the harness writes. ``reason`` is the DLQ reason it must get (None: it must not be one)."""

    kind: str  # placed | dup | ghost | garbage | unknown_schema_id | incompatible_schema | invalid | resend
    key: str
    event_id: str
    variant: int = 0
    param: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class Workload:
    order_ids: tuple[str, ...]
    main: tuple[Item, ...]
    late: tuple[Item, ...]
    swaps: int
    same_entity_swaps: int

    @property
    def manifest(self) -> tuple[Item, ...]:
        """Every record that must end in the DLQ."""
        return tuple(i for i in (*self.main, *self.late) if i.reason is not None)

    def duplicates(self) -> int:
        return sum(1 for i in (*self.main, *self.late) if i.kind in ("dup", "resend"))


def order_ids(seed: int, profile: Profile) -> tuple[str, ...]:
    """The orders of a run: ``nopay-`` ones (never answered) spread among the others by the seed."""
    rng = random.Random(f"{seed}-orders")
    normal = [f"ord-{seed}-{i:06d}" for i in range(profile.orders - profile.no_answer)]
    for i in range(profile.no_answer):
        normal.insert(rng.randrange(len(normal) + 1), f"nopay-{seed}-{i:04d}")
    return tuple(normal)


def workload(seed: int, profile: Profile) -> Workload:
    rng = random.Random(f"{seed}-workload")
    ids = order_ids(seed, profile)
    n_dups = round(profile.duplicate_share * profile.orders)
    pairs = n_dups // 4  # re-sent late, two records per order
    immediate = n_dups - 2 * pairs
    dup_of = set(rng.sample(range(len(ids)), immediate))
    main: list[Item] = []
    for i, oid in enumerate(ids):
        main.append(Item("placed", oid, f"placed-{oid}"))
        if i in dup_of:
            main.append(Item("dup", oid, f"placed-{oid}"))
    inserts: list[Item] = [Item("ghost", f"ghost-{seed}-{i:04d}", f"chaos-ghost-{i}", i % len(GHOST_EVENTS),
                                reason=GHOST) for i in range(profile.ghosts)]
    for i in range(profile.garbage):
        variant = i % len(GARBAGE_VARIANTS)
        inserts.append(Item(GARBAGE, f"garbage-{seed}-{i:04d}", f"chaos-garbage-{i}", variant,
                            rng.randrange(1 << 30), GARBAGE_VARIANTS[variant][1]))
    inserts += [Item(UNKNOWN_SCHEMA, f"unknown-{seed}-{i:04d}", f"chaos-unknown-{i}", param=900_000 + i,
                     reason=UNKNOWN_SCHEMA) for i in range(profile.unknown_schema)]
    inserts += [Item(INCOMPATIBLE, rng.choice(ids), f"chaos-incompatible-{i}", reason="schema_mismatch")
                for i in range(profile.incompatible)]
    for item in inserts:
        main.insert(rng.randrange(len(main) + 1), item)
    # Late: targets among the first 60% of answered orders (they end well before the placement does).
    answered = [o for o in ids[: max(1, len(ids) * 3 // 5)] if not o.startswith("nopay-")]
    late: list[Item] = [Item(INVALID, oid, f"chaos-invalid-{i}", reason=INVALID)
                        for i, oid in enumerate(rng.sample(answered, min(profile.invalid, len(answered))))]
    for oid in rng.sample(answered, min(pairs, len(answered))):
        late.append(Item("resend", oid, f"placed-{oid}", 0))
        late.append(Item("resend", oid, "", 1))  # its first service reply, copied from the log
    rng.shuffle(late)
    # Keep each order's re-sent pair adjacent (placed copy first), so a swap of the pair is a same-entity swap.
    late = _pair_up(late)
    swaps_main, swaps_late = _split(profile.swaps, len(main), len(late))
    same = _swap(main, swaps_main, rng) + _swap(late, swaps_late, rng)
    return Workload(ids, tuple(main), tuple(late), profile.swaps, same)


def _pair_up(items: list[Item]) -> list[Item]:
    out: list[Item] = []
    for item in items:
        if item.kind == "resend" and item.variant == 1:
            continue
        out.append(item)
        if item.kind == "resend":
            out.append(Item("resend", item.key, "", 1))
    return out


def _split(swaps: int, n_main: int, n_late: int) -> tuple[int, int]:
    late = min(n_late // 3, round(swaps * n_late / max(1, n_main + n_late)) + swaps // 10)
    return swaps - late, late


def _swap(items: list[Item], count: int, rng: random.Random) -> int:
    """Exchange ``count`` disjoint adjacent pairs; returns how many pairs belong to one entity."""
    if len(items) < 2 or count <= 0:
        return 0
    starts = sorted(rng.sample(range(0, len(items) - 1, 2), min(count, len(items) // 2)))
    same = 0
    for i in starts:
        items[i], items[i + 1] = items[i + 1], items[i]
        same += items[i].key == items[i + 1].key
    return same


# -- faults --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One scheduled fault, ``at_s`` seconds after the fault phase starts."""

    at_s: float
    kind: str  # kill | pause_worker | pause_broker | kill_broker
    target: str  # a process; "broker" (the embedded one); a node id, or "controller", on three nodes
    duration_s: float  # kill: down time before the restart; pause: how long it stays stopped
    delete_state: bool = False

    def to_json(self) -> dict[str, object]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Schedule:
    faults: tuple[Fault, ...]
    # Fault points armed at the first start: process -> (point, hit count at which it fires).
    armed: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def kills(self) -> int:
        return sum(1 for f in self.faults if f.kind == "kill")

    @property
    def end_s(self) -> float:
        return max((f.at_s + f.duration_s for f in self.faults), default=0.0)

    def to_json(self) -> dict[str, object]:
        return {"faults": [f.to_json() for f in self.faults],
                "fault_points": {p: {"point": pt, "after": n} for p, (pt, n) in sorted(self.armed.items())}}


def schedule(seed: int, profile: Profile) -> Schedule:
    """Kills every ``kill_gap_s`` until both ``min_kills`` and the placement time are reached; one of them on
    an orchestrator also deletes its state directory; one orchestrator SIGSTOPped past ``max.poll.interval.ms``;
    ``broker_pauses`` broker pauses; each fault point of the commit protocol and of timer firing armed once."""
    rng = random.Random(f"{seed}-faults")
    faults: list[Fault] = []
    t = 0.0
    while True:
        t += rng.uniform(*profile.kill_gap_s)
        faults.append(Fault(t, "kill", rng.choice(PROCESSES), rng.uniform(*profile.restart_s)))
        if len(faults) >= profile.min_kills and t >= profile.place_s:
            break
    span = t
    # The state-directory deletion: the first kill of an orchestrator after the first kill (one is forced).
    idx = next((i for i, f in enumerate(faults) if i > 0 and f.target in ORCHESTRATORS), None)
    if idx is None:
        idx = len(faults) // 2
    f = faults[idx]
    faults[idx] = Fault(f.at_s, "kill", ORCHESTRATORS[rng.randrange(3)] if f.target not in ORCHESTRATORS
                        else f.target, f.duration_s, delete_state=True)
    stop_s = profile.max_poll_ms / 1000 + rng.uniform(3, 6)
    faults.append(Fault(rng.uniform(0.25, 0.5) * span, "pause_worker", rng.choice(ORCHESTRATORS), stop_s))
    for i in range(profile.broker_pauses):
        lo = 0.55 + 0.35 * i / max(1, profile.broker_pauses)
        faults.append(Fault(rng.uniform(lo, lo + 0.3 / max(1, profile.broker_pauses)) * span, "pause_broker",
                            "broker", profile.broker_pause_s))
    if profile.broker_kills:
        faults = _on_nodes(faults, seed, profile, span)
    faults.sort(key=lambda x: x.at_s)
    timer_on = rng.choice(ORCHESTRATORS)
    rest = [p for p in PROCESSES if p != timer_on]
    rng.shuffle(rest)
    armed = {timer_on: (TIMER_POINTS[0], rng.randint(*profile.timer_after))}
    for proc, point in zip(rest, profile.commit_points, strict=True):
        armed[proc] = (point, rng.randint(*profile.commit_after))
    return Schedule(tuple(faults), armed)


def _on_nodes(faults: list[Fault], seed: int, profile: Profile, span: float) -> list[Fault]:
    """Three nodes: each broker pause stops one node, and ``broker_kills`` SIGKILLs spread over the first half
    of the run (pauses are in the second), the first of the active controller. The executor keeps them one
    at a time, so the cluster always has a quorum and min.insync.replicas."""
    rng = random.Random(f"{seed}-broker-faults")
    out = [Fault(f.at_s, f.kind, str(rng.choice(NODES)), f.duration_s) if f.kind == "pause_broker" else f
           for f in faults]
    width = 0.42 / profile.broker_kills
    for i in range(profile.broker_kills):
        lo = 0.08 + i * width
        target = CONTROLLER if i == 0 else str(rng.choice(NODES))
        out.append(Fault(rng.uniform(lo, lo + 0.6 * width) * span, "kill_broker", target,
                         rng.uniform(*profile.broker_down_s)))
    return out


# -- the DLQ score -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letter:
    """A dead letter as the check sees it: its ``streams-id``, reason and origin headers."""

    event_id: str
    reason: str
    origin: tuple[str, int, int]


@dataclass(frozen=True)
class DlqScore:
    expected: int
    actual: int  # distinct origins (a crash may write a dead letter twice; its origin identifies the copies)
    copies: int
    true_positives: int
    precision: float
    recall: float
    unexpected: tuple[Letter, ...]
    missing: tuple[str, ...]
    by_class: Mapping[str, tuple[int, int]]  # class -> (expected, found)


def score(expected: Mapping[str, tuple[str, str, tuple[str, int, int]]], letters: Iterable[Letter]) -> DlqScore:
    """Precision and recall of the DLQ against the manifest.

    ``expected`` maps each poison record's ``streams-id`` to (class, reason, origin topic/partition/offset as
    produced). A dead letter is a true positive when its id is in the manifest with the same reason and the
    same origin headers."""
    by_origin: dict[tuple[str, int, int], Letter] = {}
    copies = 0
    for letter in letters:
        copies += 1
        by_origin.setdefault(letter.origin, letter)
    found: set[str] = set()
    unexpected: list[Letter] = []
    for letter in by_origin.values():
        want = expected.get(letter.event_id)
        if want is not None and want[1] == letter.reason and want[2] == letter.origin:
            found.add(letter.event_id)
        else:
            unexpected.append(letter)
    tp = len(found)
    classes: dict[str, tuple[int, int]] = {}
    for eid, (cls, _r, _o) in expected.items():
        e, f = classes.get(cls, (0, 0))
        classes[cls] = (e + 1, f + (eid in found))
    return DlqScore(
        expected=len(expected), actual=len(by_origin), copies=copies, true_positives=tp,
        precision=tp / len(by_origin) if by_origin else 1.0,
        recall=tp / len(expected) if expected else 1.0,
        unexpected=tuple(unexpected), missing=tuple(sorted(set(expected) - found)), by_class=classes,
    )
