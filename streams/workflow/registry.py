"""Known workflows by name, so the CLI, topology files and the runtime name a workflow instead of importing it.

A factory takes keyword parameters (timeouts, retry policies as plain mappings) and returns a validated
:class:`Definition`; building validates, so a bad parameter fails at startup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from streams.errors import WorkflowDefinitionError
from streams.workflow.definition import Definition
from streams.workflow.orders import order_saga

Factory = Callable[..., Definition]

WORKFLOWS: Mapping[str, Factory] = MappingProxyType({"orders": order_saga})


def names() -> list[str]:
    return sorted(WORKFLOWS)


def create(name: str, params: Mapping[str, Any] | None = None) -> Definition:
    """Build workflow ``name`` with ``params``; unknown names and parameters are a WorkflowDefinitionError."""
    factory = WORKFLOWS.get(name)
    if factory is None:
        raise WorkflowDefinitionError(f"unknown workflow {name!r}; known: {', '.join(names())}")
    try:
        return factory(**dict(params or {}))
    except TypeError as exc:
        raise WorkflowDefinitionError(f"workflow {name!r}: bad parameters: {exc}") from exc
