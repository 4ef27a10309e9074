"""streams: a Kafka-native workflow engine for Python.

The public surface is small on purpose; adapters are wired together only in :mod:`streams.cli`.
"""

from streams.errors import StreamsError
from streams.records import InputRecord, OutputRecord

__all__ = ["InputRecord", "OutputRecord", "StreamsError"]
__version__ = "0.1.0"
