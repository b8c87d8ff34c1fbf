"""The offline sample data of `efm make-sample-data` and `efm demo`: a synthetic world written in the
public COG mirror's layout, with its ground truth. Not a transform: a generator of inputs.

May import: transforms.core, transforms.sources.
"""
