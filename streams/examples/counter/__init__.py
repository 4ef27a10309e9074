"""The runtime demo's topology (``topology.yaml``, ``--topology counter``): a stateful counter per key."""
