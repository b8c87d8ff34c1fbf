"""`efm`: one console script, a subcommand per pipeline (each also `python -m pipelines.<name>`)."""

from __future__ import annotations

import importlib
import sys

from pipelines import interrupts  # only `signal`: Ctrl-C is handled from the start

SUBCOMMANDS = {
    "extract": ("pipelines.extract", "extract embeddings from Earth Engine into Zarr"),
    "label": (
        "pipelines.label",
        "a local page to click labelled points on the map, with a live k-NN preview",
    ),
    "sample": ("pipelines.sample", "sample the embedding at labelled points into a table"),
    "zonal": (
        "pipelines.zonal",
        "embeddings per polygon (field, parcel): mean/median/std of each band -> a table",
    ),
    "train": (
        "pipelines.train",
        "train a classifier or regressor on sampled points, with cross-validation",
    ),
    "cluster": ("pipelines.cluster", "fit k-means on a random sample of pixels"),
    "classify": ("pipelines.classify", "apply a model to a store chunk by chunk -> class map"),
    "predict": (
        "pipelines.predict",
        "apply any model (classifier, clusterer, regressor) to a store -> map",
    ),
    "change": (
        "pipelines.change",
        "per-pixel similarity of two years (1 = unchanged) -> change store",
    ),
    "similarity": (
        "pipelines.similarity",
        "similarity of every pixel to reference points -> similarity store",
    ),
    "export": (
        "pipelines.export",
        "any map (classes, prediction, similarity, change) or embedding band -> COG + PNG",
    ),
    "verify": (
        "pipelines.verify",
        "check that every chunk of a store is there and decodes; names the damaged ones",
    ),
    "make-sample-data": (
        "pipelines.make_sample_data",
        "generate a local COG mirror with ground truth and labelled points",
    ),
    "demo": ("pipelines.demo", "run the workflow end to end on generated data, offline"),
}
SKOPS_COMMANDS = {"train", "cluster", "classify", "predict"}


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # `efm ...`: this process is the command's (Ctrl-C: pipelines/interrupts.py)
        interrupts.own_process()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: efm <command> [flags]  (efm <command> --help for its flags)\n\ncommands:")
        for name, (_, summary) in SUBCOMMANDS.items():
            print(f"  {name:<17} {summary}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(
            f"efm: error: unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        if name in SKOPS_COMMANDS and any(a.endswith(".skops") for a in rest):
            # skops' import looks up every numpy/scipy ufunc it trusts in every loaded module: done
            # before Beam and friends fill sys.modules it costs ~0.8 CPU s less (benchmarks/RESULTS.md).
            import skops.io  # noqa: F401
        module = importlib.import_module(
            SUBCOMMANDS[name][0]
        )  # Beam and friends take seconds to import
        # A Ctrl-C only escapes the command's run while it sets up (failures.session): it writes nothing.
        return module.run(rest)
    except KeyboardInterrupt:
        print(
            f"efm {name}: error: interrupted (Ctrl-C) before it started; nothing was written",
            file=sys.stderr,
        )
        interrupts.ignore()  # here, while it is handled, no later Ctrl-C interrupts this
        return 130


if __name__ == "__main__":
    sys.exit(main())
