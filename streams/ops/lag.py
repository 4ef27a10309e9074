"""Consumer lag, as the ops commands and the dashboard read it: the reader is a Kafka client like the others,
so it lives in :mod:`streams.kafka.lag` (only ``streams.kafka`` imports confluent-kafka)."""

from streams.kafka.lag import GroupLag, LagReader, PartitionLag, UnknownGroupError, Watermarks, consumer_lag

__all__ = ["GroupLag", "LagReader", "PartitionLag", "UnknownGroupError", "Watermarks", "consumer_lag"]
