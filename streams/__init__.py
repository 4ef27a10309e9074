"""streams: a Kafka-native workflow engine for Python.

What a workflow author needs is here: the builder and its actions, retry policies, the in-memory ``Driver``
for tests, the errors, and the ``Processor`` protocol for processors that are not workflows. Everything else
is the engine's own and may change between releases; adapters are wired together only in :mod:`streams.cli`.
``docs/reference.md`` is generated from these names' docstrings (``scripts/reference.py``).
"""

from streams import _native

_native.install_guard()  # before anything imports a compiled module: see streams/_native.py

from streams.errors import (  # noqa: E402
    ConfigError,
    DecodeError,
    EncodeError,
    InvalidTransitionError,
    KafkaUnavailableError,
    SchemaRegistryError,
    StreamsError,
    TopologyError,
    WorkflowDefinitionError,
)
from streams.records import InputRecord, OutputRecord  # noqa: E402
from streams.runtime.processor import Processor, Step, TimerChange  # noqa: E402
from streams.workflow.context import StepContext  # noqa: E402
from streams.workflow.definition import Definition  # noqa: E402
from streams.workflow.driver import Driver  # noqa: E402
from streams.workflow.dsl import (  # noqa: E402
    WorkflowBuilder,
    cancel_timer,
    complete_step,
    data_fields,
    emit,
    fail,
    guard,
    issue,
    record,
    record_with,
    set_timer,
)
from streams.workflow.fields import Field  # noqa: E402
from streams.workflow.model import Event, WorkflowState  # noqa: E402
from streams.workflow.retry import NO_RETRY, RetryPolicy  # noqa: E402

__all__ = [  # grouped by use in docs/reference.md
    "NO_RETRY",
    "ConfigError",
    "DecodeError",
    "Definition",
    "Driver",
    "EncodeError",
    "Event",
    "Field",
    "InputRecord",
    "InvalidTransitionError",
    "KafkaUnavailableError",
    "OutputRecord",
    "Processor",
    "RetryPolicy",
    "SchemaRegistryError",
    "Step",
    "StepContext",
    "StreamsError",
    "TimerChange",
    "TopologyError",
    "WorkflowBuilder",
    "WorkflowDefinitionError",
    "WorkflowState",
    "cancel_timer",
    "complete_step",
    "data_fields",
    "emit",
    "fail",
    "guard",
    "issue",
    "record",
    "record_with",
    "set_timer",
]
__version__ = "0.1.0"
