"""The loan application: its workflow (:mod:`.workflow`), reference services (:mod:`.services`), topology
(``topology.yaml``, ``--topology loan``) and Avro contracts (``schemas/``)."""
