"""The Zarr store and a run's bookkeeping: templates, writing chunks, markers, reading windows,
where a command may write, --resume checks, the run plan, progress.

May import: transforms.core, transforms.sources (request estimates).
"""
