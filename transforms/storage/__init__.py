"""The Zarr store and a run's bookkeeping: templates and their GeoZarr attributes, writing chunks,
markers, reading windows, the part of a store a run works on (--bbox/--aoi), where a command may
write, --resume checks, the run plan, progress.

May import: transforms.core, transforms.sources (request estimates).
"""
