"""efm's PTransforms and the pure functions under them, one folder per concern:

    core/      the data contract's vocabulary: errors, the grid, chunks, quantisation, metric names
    sources/   where embeddings come from: Earth Engine and the COG mirror, fetched with bounded memory
    storage/   the Zarr store and a run's bookkeeping: writes, markers, reads, subsets, --resume, plan, progress
    learning/  scikit-learn: sampling at points, training, model files and sidecars
    products/  per-pixel maps on one chunk-map frame (classify, predict, similarity, change) and export

A folder imports only the folders above it in this list (tests/test_layout.py checks it);
pipelines/ parses options and composes them.
"""
