"""scikit-learn models: sampling the store at points, training, model files and their sidecar.

May import: transforms.core, transforms.storage.
"""
