"""The lab: the benchmark, the fault-injection (chaos) harness, the demos' drivers and the load generator.

Tools that measure and attack the engine from outside, through its public surfaces and real processes. They
are not part of the engine: nothing in the engine imports this package (an import-linter contract).
"""
