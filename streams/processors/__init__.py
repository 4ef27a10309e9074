"""Processors the runtime can run, and how a topology names them.

A topology's ``processor:`` is a built-in name from :data:`BUILTINS` or ``package.module:factory``; the
factory receives the processor's ``options`` mapping and its output topics.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

from streams.errors import TopologyError
from streams.runtime.processor import Processor

BUILTINS: Mapping[str, str] = {
    "counter": "streams.processors.counter:CounterProcessor",
    "workflow": "streams.processors.workflow:factory",
    "payment-service": "streams.processors.services:payment",
    "inventory-service": "streams.processors.services:inventory",
    "shipping-service": "streams.processors.services:shipping",
}


def resolve(name: str, options: Mapping[str, Any], outputs: Sequence[str]) -> Processor[object, object]:
    target = BUILTINS.get(name, name)
    module_name, _, attr = target.partition(":")
    if not attr:
        raise TopologyError(f"processor {name!r}: expected a built-in name ({', '.join(BUILTINS)}) "
                            "or 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise TopologyError(f"processor {name!r}: cannot import {target}: {exc}") from exc
    return cast(Processor[object, object], factory(dict(options), list(outputs)))
