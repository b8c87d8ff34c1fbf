"""`efm export`: a product store's map (class, prediction, similarity, change, confidence, 0/1 mask)
or one band of an embedding store -> a COG per year (one for a store without time) [+ PNG].

Not a Beam pipeline: one GeoTIFF is one sequential file, written window by window by one
process (memory stays flat; the store is read chunk by chunk).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import fsspec

from pipelines import common, tuning
from transforms.core import grid as gridlib
from transforms.core import tuning as tuning_syntax
from transforms.core.errors import InputError
from transforms.products import export, export_layer, quicklook
from transforms.storage import outputs, subset


def build_parser():
    parser = common.make_parser(
        "efm export",
        "Export a map (class map, prediction, similarity, change, or one band of an embedding store) as a Cloud-Optimized GeoTIFF per year, with an optional PNG quicklook.",
        beam_options=False,
    )
    parser.add_argument(
        "--input",
        required=True,
        help="store from `efm classify`/`predict`/`similarity`/`change`, or an embedding store with --band",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="GeoTIFF path; several years give <name>_<year>.tif (or put {year} in the name); a change store gives one file",
    )
    parser.add_argument(
        "--years", help="years to export (default: every year of the store; not for a change store)"
    )
    parser.add_argument(
        "--variable",
        help="the store's variable to export, e.g. confidence, similar, changed (default: the product's main one: class, prediction or similarity)",
    )
    parser.add_argument("--band", help="embedding stores: the band to export, e.g. A01")
    parser.add_argument(
        "--png",
        action="store_true",
        help="also write a PNG quicklook next to each GeoTIFF (legend of the classes; colour bar with units for float maps; false colour for embedding stores)",
    )
    parser.add_argument(
        "--mosaic",
        action="store_true",
        help="collections: one COG in EPSG:4326 over all zones (each pixel from the zone holding its centre) instead of a COG per zone + map.vrt",
    )
    subset.add_flags(parser, "export")
    tuning.add_flag(parser, "export")
    common.add_overwrite(parser, "existing files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = common.own_args(build_parser(), argv)
    # png_size, mosaic_scale, nodata, colors, rgb: --tuning keys (pipelines/tuning_keys.py),
    # checked as they are parsed
    float_nodata = args.nodata
    from transforms.storage import collection as collectionlib

    if collectionlib.is_collection(args.input):  # a store per UTM zone: pipelines/export_zones.py
        from pipelines import export_zones

        return export_zones.main(args, float_nodata)
    if args.mosaic or args.mosaic_scale is not None:
        raise InputError(
            "--mosaic" if args.mosaic else "--tuning",
            ("" if args.mosaic else "mosaic_scale: ")
            + f"{args.input} is one store, exported in its own grid; --mosaic is for a collection",
        )
    if not args.output.lower().replace("{year}", "").endswith((".tif", ".tiff")):
        raise InputError("--output", f"{args.output}: name the GeoTIFF with .tif, e.g. classes.tif")
    layer = export_layer.open_layer(
        args.input, variable=args.variable, band=args.band, float_nodata=float_nodata
    )
    years = select_years(args, layer, ", e.g. of a change")
    sub = subset.from_args(
        args, layer
    )  # --bbox/--aoi: the GeoTIFF is that window of the store's grid
    layer = export_layer.crop(layer, sub)
    rgb, rgb_idx = [], []
    if args.png and layer.variable == "embedding":
        rgb = tuning_syntax.value_list(args.rgb)
        from transforms.storage import store

        bands = [str(b) for b in store.open_embeddings(args.input)["band"].values]
        if len(rgb) != 3 or any(b not in bands for b in rgb):
            raise InputError(
                "--tuning",
                f"rgb: expected three bands of the store, e.g. rgb={';'.join(export.DEFAULT_RGB)}, "
                f"got {args.rgb!r}",
            )
        rgb_idx = [bands.index(b) for b in rgb]
    paths = export.output_paths(args.output, years)
    inputs = {
        "--input": args.input,
        "--tuning colors": args.colors if args.colors and os.path.exists(args.colors) else None,
        "--aoi": args.aoi,
    }
    check_outputs(paths, inputs, args.overwrite, png=args.png)
    colors = class_colours(args, layer)
    rows = []
    with common.Stopwatch() as clock:
        try:
            for year, path in paths.items():
                t = layer.years.index(year) if layer.timed else None
                export.write_cog(layer, t, path, colors)
                when = f"{year}" if layer.timed else _span(layer)
                rows.append((when, path))
                if args.png:
                    png = path.rsplit(".", 1)[0] + ".png"
                    if layer.kind == "continuous":
                        title = f"{os.path.basename(layer.path.rstrip('/'))} — {layer.variable} — {when}"
                        with export.local_copy(path) as local:
                            quicklook.quicklook_continuous(local, png, layer, title, args.png_size)
                    elif layer.is_class:
                        with export.local_copy(path) as local:
                            quicklook.quicklook_classes(
                                local, png, layer, colors, when, args.png_size
                            )
                    else:
                        quicklook.quicklook_false_colour(
                            layer, t, rgb, rgb_idx, png, year, args.png_size
                        )
                    rows.append((f"{when} quicklook", png))
        except InputError:  # a nodata value found in the map mid-way: drop this run's files, so nothing is left half done
            for _, written in rows:
                fs, root = fsspec.core.url_to_fs(written)
                if fs.exists(root):
                    fs.rm(root)
            raise
    what = f"band {args.band}" if layer.variable == "embedding" else layer.variable
    common.print_summary(
        f"efm export: {args.input} ({what}) -> Cloud-Optimized GeoTIFF",
        [
            ("grid", f"{layer.width} x {layer.height} px in {layer.crs}"),
            *sub.summary_rows(len(paths)),
            ("nodata", f"{layer.nodata:g}" if layer.kind == "continuous" else layer.nodata),
            *(
                [("units", layer.attrs["units"])]
                if layer.attrs.get("units") and not layer.is_class
                else []
            ),
            *rows,
            (
                "classes",
                ", ".join(f"{v}={lbl}" for v, lbl in zip(layer.values, layer.labels))
                if layer.is_class
                else "-",
            ),
            ("wall time", f"{clock.seconds:.1f} s"),
        ],
    )
    return 0


def select_years(args, layer, one_map: str = "") -> list:
    """The years to export (--years, else every year of the store; [None] for a map without
    time), each one the store holds. `one_map` ends the message about a store without time."""
    if not layer.timed and args.years:
        raise InputError(
            "--years",
            f"{args.input} has no time dimension ({layer.variable} is one map{one_map}); drop --years",
        )
    years = (
        gridlib.parse_years(args.years)
        if args.years
        else list(layer.years)
        if layer.timed
        else [None]
    )
    missing = [y for y in years if layer.timed and y not in layer.years]
    if missing:
        raise InputError(
            "--years",
            f"{args.input} has no year {missing[0]}; it holds {', '.join(map(str, layer.years))}",
        )
    return years


def check_outputs(paths: dict, inputs: dict, overwrite: bool, png: bool = False) -> None:
    """Each GeoTIFF (and with `png` its quicklook) may be written: writable, and new or ours."""
    for path in paths.values():
        common.check_writable(path)
        outputs.check_output(path, "geotiff", inputs=inputs, overwrite=overwrite)
        if png:
            outputs.check_output(
                path.rsplit(".", 1)[0] + ".png", "png", inputs=inputs, overwrite=overwrite
            )


def class_colours(args, layer) -> dict | None:
    """The colour table: the layer's own (None for a continuous map), with --tuning colors over it."""
    colors = export.layer_colors(layer)
    if args.colors:
        if not layer.is_class:
            raise InputError("--tuning", "colors: colours apply to class maps only")
        colors.update(export.parse_colors(args.colors, layer, flag=COLORS_FLAG))
    return colors


# a refusal of the colors key reads as the key's own checks do: `--tuning: colors: ...`
COLORS_FLAG = "--tuning: colors"


def _span(layer) -> str:
    """The label of a store without time: its from/to years when it names them (change)."""
    import xarray as xr

    from transforms.storage.reach import storage_options

    attrs = xr.open_zarr(
        layer.path, consolidated=True, storage_options=storage_options(layer.path) or None
    ).attrs
    return (
        f"{attrs['from_year']} → {attrs['to_year']}"
        if "from_year" in attrs and "to_year" in attrs
        else "all"
    )


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm export", main, argv)


if __name__ == "__main__":
    sys.exit(run())
