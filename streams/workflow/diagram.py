"""Render a definition as a Mermaid ``stateDiagram-v2``: the review artefact for a workflow change.

Edges are labelled ``Event [guard] / effects``; generated saga rules show their retries, give-ups and
compensations, so the diagram is the whole machine the step runs, not a hand-drawn approximation of it.
"""

from __future__ import annotations

from streams.workflow.definition import Definition, Rule

_UNSAFE = str.maketrans({":": " ", ";": ",", "\n": " ", "#": " ", '"': "'"})


def _label(rule: Rule) -> str:
    text = rule.event
    if rule.guard is not None:
        text += f" [{rule.guard.label}]"
    effects = [a.label for a in rule.actions if a.label]
    if effects:
        text += " / " + ", ".join(effects)
    return text.translate(_UNSAFE)


def mermaid(defn: Definition) -> str:
    lines = ["stateDiagram-v2"]
    if defn.description:
        lines.append(f"    %% {defn.name}: {defn.description.translate(_UNSAFE)}")
    lines.append(f"    [*] --> {defn.initial}")
    seen: set[tuple[str, str, str]] = set()
    for rule in defn.rules:
        edge = (rule.source, rule.target, _label(rule))
        if edge in seen:
            continue
        seen.add(edge)
        lines.append(f"    {rule.source} --> {rule.target}: {edge[2]}")
    for state in defn.states.values():
        enter = [a.label for a in state.on_enter if a.label]
        if enter:
            lines.append(f"    {state.name}: {state.name} (on enter / {', '.join(enter)})")
    for name in sorted(defn.terminal):
        lines.append(f"    {name} --> [*]")
    return "\n".join(lines) + "\n"
