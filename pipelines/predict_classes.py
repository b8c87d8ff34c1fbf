"""`efm predict`'s class maps: an embedding store + a classifier or clusterer -> a class-map
store, chunk by chunk (pipelines/predict.py comes here for such a model; `efm classify`, its other
name, too).

    chunk specs | ClassifyChunks(store, model) | WriteChunks | MarkComplete

The flow (prepare, plan, progress, write, markers) is pipelines/product.py's, shared by every per-pixel product.
"""

from __future__ import annotations

import os

from pipelines import common, fanout, product
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.learning import model_cache, model_inputs, models
from transforms.products.classify import ClassifyChunks, class_encoding, class_template
from transforms.storage import readers, store, subset


def map_parser(prog: str, description: str, verb: str = "predict"):
    """The flags of a per-pixel map from a model (`efm predict`, and so `efm classify`)."""
    parser = common.make_parser(prog, description)
    parser.add_argument(
        "--embeddings",
        required=True,
        help="embedding store (Zarr, local path or gs://) or a collection of them (one per UTM zone)",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="model file from `efm train` / `efm cluster` (.skops, or .pkl/.joblib pickle)",
    )
    parser.add_argument(
        "--model-sha256",
        help="load a pickle only if its sha256 is this (printed by efm train/cluster, in the sidecar)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load a pickle without a hash check (a pickle runs code: only for files you made)",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="class-map store to write (Zarr, local path or gs://); a collection of them for a collection",
    )
    parser.add_argument(
        "--confidence",
        action="store_true",
        help="also write `confidence`, the maximum class probability",
    )
    parser.add_argument(
        "--years", help=f"years to {verb}, e.g. 2021,2022 (default: every year of the store)"
    )
    subset.add_flags(parser, verb)
    mode = parser.add_mutually_exclusive_group()
    common.add_resume(mode, f"{verb} only the missing chunks")
    common.add_overwrite(mode)
    product.add_dry_run(parser)
    return parser


def worker_threads(options) -> int | None:
    """Estimator threads per worker process: the cores split over local workers; 1 per SDK process elsewhere."""
    workers = common.local_workers(options)
    return max(1, (os.cpu_count() or 1) // workers) if workers else 1


def classify(
    args, options, loaded: models.LoadedModel | None = None, prog: str = "efm classify"
) -> int:
    """The class map of a classifier or clusterer (`efm predict` comes here too, with the model it
    loaded), on a store or a collection (pipelines/fanout.py)."""
    # Checks, before anything is written or any worker starts.
    loaded = loaded or models.load_model(
        args.model, sha256=args.model_sha256, trust_pickle=args.trust_pickle
    )
    if loaded.is_regressor:
        raise InputError(
            "--model",
            f"{args.model} is a regressor ({type(loaded.model).__name__}): it predicts values, not classes; "
            "apply it with `efm predict` (same flags)",
        )
    if args.confidence and not model_inputs.has_proba(loaded.model):
        raise InputError(
            "--confidence",
            f"a {type(loaded.model).__name__} gives no class probabilities; drop --confidence or use a classifier with predict_proba",
        )
    model_cache.put(loaded)  # an in-process worker reuses it instead of parsing the file again
    encoding = class_encoding(
        loaded.classes, prefix="cluster" if loaded.kind == "clusterer" else "class"
    )

    def make_job(embeddings: str, cell) -> fanout.Job | None:
        ds = store.open_embeddings(embeddings)
        info = readers.store_info(embeddings, ds)
        years = readers.select_years(info, gridlib.parse_years(args.years) if args.years else None)
        sub = subset.from_args(args, info, cell)  # --bbox/--aoi: a window of the grid
        if sub is None:
            return None
        model_inputs.check_bands(loaded, list(info.bands), embeddings)
        template = class_template(
            ds,
            years,
            encoding,
            confidence=args.confidence,
            chunk_rows=info.chunk_rows,
            chunk_cols=info.chunk_cols,
            attrs={
                "source": embeddings,
                "embeddings_source": info.source,
                "model": args.model,
                "model_sha256": loaded.sha256,
                "model_estimator": type(loaded.model).__name__,
                "crs": info.crs,
                "scale": abs(info.transform[0]),
                "chunk_size": info.chunk_rows,
                "license": store.LICENSE,
                "attribution": store.ATTRIBUTION,
                **sub.attrs,
            },
            window=sub.window,
        )
        transform = ClassifyChunks(
            embeddings=embeddings,
            model_path=args.model,
            model_sha256=loaded.sha256,
            encoding=encoding,
            year_to_time={year: info.time_index(year) for year in years},
            confidence=args.confidence,
            n_jobs=worker_threads(options),
            years=years,
            offset=sub.offset,
        )

        def rows(result: product.MapRun) -> list:
            model = f"{type(loaded.model).__name__}, {len(encoding.labels)} classes, sha256 {loaded.sha256}"
            return product.summary_rows(
                result,
                info,
                sub,
                [("model", model)],
                years,
                ("pixels classified", "pixels_classified"),
                "pixels without data (left as fill)",
                [("class encoding", f"{encoding.dtype}, fill {encoding.fill}")],
            )

        return fanout.Job(
            info,
            template,
            sub.plan(years),
            transform,
            years,
            rows,
            "pixels_classified",
            resume_names=subset.RESUME_ATTRS,
        )

    return fanout.run(
        prog,
        args,
        options,
        kind="classes",
        inputs={
            "--embeddings": args.embeddings,
            "--model": [args.model, models.sidecar_path(args.model)],
            "--aoi": args.aoi,
        },
        make_job=make_job,
    )
