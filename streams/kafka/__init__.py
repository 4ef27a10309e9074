"""Kafka adapters: client factories, admin, and the embedded broker. confluent-kafka stays behind this package."""
