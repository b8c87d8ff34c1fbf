"""`efm predict`: any model + an embedding store -> a map, chunk by chunk.

A classifier or clusterer gives what `efm classify` gives (the same code, pipelines/predict_classes.py);
a regressor (`sklearn.base.is_regressor`, or kind "regressor" in the model file / sidecar) gives
`prediction (time, y, x)` float32, NaN = no data, with the target's name and units from the
sidecar in its attrs.

    chunk specs | MapChunks(RegressFunction(model)) | WriteChunks | MarkComplete
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipelines import common, fanout, polygon_table, predict_classes, product
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.learning import model_cache, model_inputs, models
from transforms.products.chunk_map import MapChunks, output_template
from transforms.products.classify import RegressFunction, regression_variable
from transforms.storage import readers, store, subset


def build_parser(prog: str = "efm predict"):
    """`efm predict`'s flags; `efm classify` is the same command under another name."""
    parser = predict_classes.map_parser(
        prog,
        "Apply any trained model to every pixel of an embedding store: a classifier or clusterer -> "
        "a class map, a regressor -> `prediction` float32. With --polygons: to each polygon's "
        "mean embedding -> a table (Parquet) with a class (or prediction) per polygon and year. "
        "`efm classify` is another name for this command.",
    )
    polygon_table.add_polygon_flags(parser, with_stats=False)
    return parser


def predict_polygons(args, options, loaded, prog: str = "efm predict") -> int:
    """`efm predict --polygons`: `efm zonal`'s mean per polygon and year, then the model on it."""
    for flag, given in (
        ("--confidence", args.confidence),
        ("--resume", args.resume),
        ("--bbox", args.bbox),
        ("--aoi", args.aoi),
        ("--dry-run", args.dry_run),
    ):
        if given:
            raise InputError(flag, "does not apply with --polygons (a table per polygon); drop it")
    return polygon_table.run_zonal(args, options, prog, ("mean",), loaded)


def main(argv: Sequence[str] | None = None, prog: str = "efm predict") -> int:
    args, options = common.split_args(build_parser(prog), argv)
    loaded = models.load_model(args.model, sha256=args.model_sha256, trust_pickle=args.trust_pickle)
    if loaded.is_regressor and prog == "efm classify":  # the one difference: a class map, or no
        return predict_classes.classify(
            args, options, loaded, prog=prog
        )  # (refused, naming predict)
    if args.polygons is not None:
        return predict_polygons(args, options, loaded, prog)
    for flag in ("id_column", "all_touched", "skip_invalid"):
        if getattr(args, flag):
            raise InputError("--" + flag.replace("_", "-"), "applies with --polygons only; drop it")
    if not loaded.is_regressor:
        return predict_classes.classify(args, options, loaded, prog=prog)
    if args.confidence:
        raise InputError(
            "--confidence",
            f"a regressor ({type(loaded.model).__name__}) gives no class probabilities; drop --confidence",
        )
    model_cache.put(loaded)  # an in-process worker reuses it instead of parsing the file again
    variable = regression_variable(loaded.sidecar)

    def make_job(embeddings: str, cell) -> fanout.Job | None:
        ds = store.open_embeddings(embeddings)
        info = readers.store_info(embeddings, ds)
        years = readers.select_years(info, gridlib.parse_years(args.years) if args.years else None)
        sub = subset.from_args(args, info, cell)  # --bbox/--aoi: a window of the grid
        if sub is None:
            return None
        model_inputs.check_bands(loaded, list(info.bands), embeddings)
        attrs = {
            **product.grid_attrs(embeddings, info),
            "model": args.model,
            "model_sha256": loaded.sha256,
            "model_estimator": type(loaded.model).__name__,
            **sub.attrs,
        }
        template = output_template(
            ds,
            [variable],
            years,
            chunk_rows=info.chunk_rows,
            chunk_cols=info.chunk_cols,
            product="prediction",
            attrs=attrs,
            window=sub.window,
        )
        transform = MapChunks(
            embeddings,
            RegressFunction(args.model, loaded.sha256, predict_classes.worker_threads(options)),
            {t: (info.time_index(year),) for t, year in enumerate(years)},
            (variable,),
            offset=sub.offset,
        )

        def rows(result: product.MapRun) -> list:
            model = f"{type(loaded.model).__name__} (regressor of {variable.attrs['target']}), sha256 {loaded.sha256}"
            return product.summary_rows(
                result,
                info,
                sub,
                [("model", model)],
                years,
                ("pixels predicted", "pixels_predicted"),
                "pixels without data (NaN)",
            )

        return fanout.Job(
            info,
            template,
            sub.plan(years),
            transform,
            years,
            rows,
            "pixels_predicted",
            resume_names=subset.RESUME_ATTRS,
        )

    return fanout.run(
        prog,
        args,
        options,
        kind="prediction",
        inputs={
            "--embeddings": args.embeddings,
            "--model": [args.model, models.sidecar_path(args.model)],
            "--aoi": args.aoi,
        },
        make_job=make_job,
    )


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm predict", main, argv)


if __name__ == "__main__":
    sys.exit(run())
