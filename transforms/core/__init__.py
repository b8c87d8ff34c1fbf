"""The data contract's vocabulary: errors, the grid, chunks and the plan of which a run writes,
the int8 quantisation, metric names; and a local run's progress line (counted from its output).

Imports nothing else of efm: every other layer builds on it.
"""
