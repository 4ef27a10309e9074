"""Writes docs/reference.md from the docstrings of ``streams.__all__`` (``--check``: exit 1 if it is stale)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import streams

OUT = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
GROUPS = [
    ("Declaring a workflow", ["WorkflowBuilder", "Definition", "StepContext", "emit", "issue", "record",
                              "record_with", "set_timer", "cancel_timer", "complete_step", "fail", "guard",
                              "data_fields", "Field", "RetryPolicy", "NO_RETRY"]),
    ("Testing a workflow", ["Driver", "Event", "WorkflowState"]),
    ("Processors that are not workflows", ["Processor", "Step", "TimerChange", "InputRecord", "OutputRecord"]),
    ("Errors", ["StreamsError", "ConfigError", "TopologyError", "WorkflowDefinitionError", "DecodeError",
                "EncodeError", "InvalidTransitionError", "KafkaUnavailableError", "SchemaRegistryError"]),
]


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _entry(name: str) -> list[str]:
    obj = getattr(streams, name)
    doc = inspect.getdoc(obj) or ""
    if not (inspect.isclass(obj) or callable(obj)):
        return [f"### `{name}`", "", f"`{obj!r}`", ""]
    kind = "class " if inspect.isclass(obj) else ""
    lines = [f"### `{kind}{name}{_signature(obj) if not inspect.isclass(obj) else ''}`", "", doc, ""]
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        for member, fn in vars(obj).items():
            if member.startswith("_") or not callable(fn) or not fn.__doc__:
                continue
            lines += [f"- `{member}{_signature(fn)}`: {inspect.getdoc(fn)}".replace("\n", " ")]
        lines.append("")
    return lines


def render() -> str:
    listed = [n for _, names in GROUPS for n in names]
    missing = sorted(set(streams.__all__) - set(listed))
    if missing:
        raise SystemExit(f"reference: public names not placed in a group: {', '.join(missing)}")
    out = ["# API reference", "", "Generated from the docstrings by `scripts/reference.py`; "
           "`import streams` gives every name below. Anything else is internal.", ""]
    for title, names in GROUPS:
        out += [f"## {title}", ""]
        for name in names:
            out += _entry(name)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/reference.md is stale: run .venv/bin/python scripts/reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
