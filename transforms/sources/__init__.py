"""Where embeddings come from: Earth Engine `computePixels` tiles and the int8 COG mirror, fetched
with bounded requests and memory (FetchChunks), and the plan of an extraction (requests, quotas,
time and size estimates).

May import: transforms.core.
"""
