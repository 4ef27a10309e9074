"""streams: a Kafka-native workflow engine for Python.

The public surface is small on purpose; adapters are wired together only in :mod:`streams.cli`.
"""

from streams import _native

_native.install_guard()  # before anything imports a compiled module: see streams/_native.py

from streams.errors import StreamsError  # noqa: E402
from streams.records import InputRecord, OutputRecord  # noqa: E402

__all__ = ["InputRecord", "OutputRecord", "StreamsError"]
__version__ = "0.1.0"
