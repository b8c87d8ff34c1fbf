"""The data contract's vocabulary: errors, the grid, chunks, the int8 quantisation, metric names.

Imports nothing else of efm: every other layer builds on it.
"""
