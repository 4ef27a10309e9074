"""Built-in examples: ordinary users of the engine, shipped with it so ``streams demo`` and the bench have
something real to run.

Each example is a package holding its code and its data (``topology.yaml``, Avro ``schemas/``), found through
importlib.resources, so they work from an installed wheel as from a checkout. The engine names them only by
string (``streams.topology.EXAMPLES``, ``streams.workflow.registry.ALIASES``) and imports one when it is asked
for; a user's own workflow is named the same way, ``package.module:factory``.
"""
