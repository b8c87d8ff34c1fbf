"""Per-pixel products on one chunk-map frame (class maps, predictions, similarity, change) and
their export to GeoTIFF/PNG.

May import: transforms.core, transforms.storage, transforms.learning.
"""
