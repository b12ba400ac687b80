"""The bottom layer: data types and interfaces every other package shares.

Nothing in ``infermeter.core`` imports any other part of infermeter (only the
standard library, numpy and ``infermeter.errors``), so any package may import
it without creating a cycle.  See docs/architecture.md for the layer order.
"""
