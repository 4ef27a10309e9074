"""The order saga: its workflow (:mod:`.workflow`), its topology (``topology.yaml``, ``--topology orders``)
and its Avro contracts (``schemas/``)."""
