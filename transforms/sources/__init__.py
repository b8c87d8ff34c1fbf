"""Where embeddings come from: Earth Engine `computePixels` tiles and the int8 COG mirror, fetched
with bounded requests and memory (FetchChunks).

May import: transforms.core.
"""
