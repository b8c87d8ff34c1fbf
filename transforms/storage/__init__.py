"""The Zarr store and a run's bookkeeping: templates and their GeoZarr attributes, writing chunks,
markers, reading windows, layouts, integrity, the part of a store a run works on (--bbox/--aoi),
where a command may write, --resume checks.

Storage only: how a run is planned against a service (requests, quotas, latency) lives with the
sources (transforms/sources/extract_plan.py), a run's progress line in transforms/core.

May import: transforms.core, transforms.sources (remote filesystems, a Zarr store as a tile source).
"""
