"""Workflows by reference, so the CLI, topology files and the runtime name a workflow instead of importing it.

A reference is ``package.module:factory``, the form a topology already uses for processors, or one of the
short :data:`ALIASES` for the built-in examples. A factory takes keyword parameters (timeouts, retry policies
as plain mappings) and returns a validated :class:`Definition`; building validates, so a bad parameter fails at
startup. The alias table holds strings and is imported on use: the engine never imports an example otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, cast

from streams.errors import StreamsError, WorkflowDefinitionError
from streams.workflow.definition import Definition

Factory = Callable[..., Definition]

ALIASES: Mapping[str, str] = MappingProxyType({"orders": "streams.examples.orders.workflow:order_saga",
                                              "loan": "streams.examples.loan.workflow:loan_application"})


def names() -> list[str]:
    """The built-in aliases (a user's workflows are named by reference, so they cannot be listed here)."""
    return sorted(ALIASES)


def factory(ref: str) -> Factory:
    """The factory ``ref`` names; a reference that cannot be imported is a WorkflowDefinitionError saying why."""
    target = ALIASES.get(ref, ref)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise WorkflowDefinitionError(f"unknown workflow {ref!r}: expected a built-in name "
                                      f"({', '.join(names())}) or 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkflowDefinitionError(f"workflow {ref!r}: cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the user's module itself is broken: say so in one line, as for any bad input
        raise WorkflowDefinitionError(f"workflow {ref!r}: importing {module_name!r} raised "
                                      f"{type(exc).__name__}: {exc}") from exc
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise WorkflowDefinitionError(f"workflow {ref!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(found):
        raise WorkflowDefinitionError(f"workflow {ref!r}: {target} is not callable (a factory returning a Definition)")
    return cast(Factory, found)


def create(ref: str, params: Mapping[str, Any] | None = None) -> Definition:
    """Build workflow ``ref`` with ``params``; bad references, parameters and results are a
    WorkflowDefinitionError."""
    build = factory(ref)
    try:
        definition = build(**dict(params or {}))
    except TypeError as exc:
        raise WorkflowDefinitionError(f"workflow {ref!r}: bad parameters: {exc}") from exc
    except StreamsError:  # a WorkflowDefinitionError listing what is wrong with the definition, typically
        raise
    except Exception as exc:
        raise WorkflowDefinitionError(f"workflow {ref!r}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(definition, Definition):
        raise WorkflowDefinitionError(f"workflow {ref!r}: the factory returned {type(definition).__name__}, "
                                      "not a Definition (build it with WorkflowBuilder(...).build())")
    return definition
