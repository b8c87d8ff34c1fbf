"""`efm export` of a collection (one store per UTM zone): a COG per zone plus a VRT in EPSG:4326
over all zones, or with --mosaic one COG in EPSG:4326 (transforms/products/zone_export.py).

Each zone's COG is what `efm export` writes for that store (its CRS, its pixels, lossless); the
mosaic's every pixel takes the value of the pixel holding its centre in the store of the cell
holding its centre. Written window by window (memory: a window and a store chunk's part).
"""

from __future__ import annotations

import os

from pipelines import common
from pipelines import export as export_cli
from transforms.core import grid as gridlib
from transforms.core.errors import InputError
from transforms.products import export, export_layer, zone_export
from transforms.products import zone_mosaic as zm
from transforms.storage import collection as collectionlib
from transforms.storage import outputs


def main(args, float_nodata: float) -> int:
    coll = collectionlib.read(args.input, flag="--input")
    if args.png:
        raise InputError(
            "--png",
            "quicklooks are made per store; for a collection open map.vrt (or the --mosaic COG) in a GIS",
        )
    if args.aoi or (args.bbox and not args.mosaic):
        raise InputError(
            "--aoi" if args.aoi else "--bbox",
            "a collection is exported whole (a COG per zone); with --mosaic, --bbox W,S,E,N "
            "limits the mosaic's area",
        )
    if args.mosaic_scale is not None and not args.mosaic:
        raise InputError(
            "--tuning", "mosaic_scale: the mosaic's pixel size: add --mosaic, or drop it"
        )
    degrees = args.mosaic_scale  # a --tuning key: 0 < degrees < 1, checked as it is parsed
    cells_layers = [
        (
            m.zone,
            export_layer.open_layer(
                coll.path_of(m),
                variable=args.variable,
                band=args.band,
                float_nodata=float_nodata,
            ),
        )
        for m in coll.members
    ]
    zone_export.check_alike(cells_layers, "--input", coll.root)
    first = cells_layers[0][1]
    years = export_cli.select_years(args, first)
    area = coll.area_lonlat or zm.area_of(m.bounds_lonlat for m in coll.members)
    if args.bbox:
        box = gridlib.parse_bbox(args.bbox)
        part = box.intersection(zm.shapely.box(*area))
        if part.is_empty or part.area == 0:
            raise InputError(
                "--bbox",
                f"{args.bbox} lies outside the collection (its area is "
                f"{', '.join(f'{v:g}' for v in area)})",
            )
        area = part.bounds
    target = zone_export.grid_for(area, abs(first.transform[0]), degrees)
    colors = export_cli.class_colours(args, first)
    inputs = {
        "--input": [args.input, *coll.paths()],
        "--tuning colors": args.colors if args.colors and os.path.exists(args.colors) else None,
    }
    rows = []
    with common.Stopwatch() as clock:
        if args.mosaic:
            if not args.output.lower().replace("{year}", "").endswith((".tif", ".tiff")):
                raise InputError(
                    "--output", f"{args.output}: name the mosaic GeoTIFF with .tif, e.g. map.tif"
                )
            paths = export.output_paths(args.output, years)
            export_cli.check_outputs(paths, inputs, args.overwrite)
            layer = zone_export.mosaic_layer(cells_layers, target, args.output)
            written = []
            try:
                for year, path in paths.items():
                    t = layer.years.index(year) if layer.timed else None
                    export.write_cog(layer, t, path, colors)
                    written.append(path)
                    rows.append((f"{year}" if year is not None else "map", path))
            except InputError:  # a nodata value found in a map mid-way: nothing left half done
                for path in written:
                    outputs.remove(path, "geotiff")
                raise
        else:
            if args.output.lower().endswith((".tif", ".tiff", ".vrt")):
                raise InputError(
                    "--output",
                    f"{args.output}: a collection is exported to a folder (a COG per zone and "
                    "map.vrt); name a folder, or add --mosaic for one GeoTIFF",
                )
            found = outputs.check_output(
                args.output, zone_export.KIND, inputs=inputs, overwrite=args.overwrite
            )
            if not found.empty:
                outputs.remove(args.output, zone_export.KIND, found=found)
            zone_export.mark(args.output)
            try:
                for year in years:
                    t = first.years.index(year) if first.timed else None
                    stems, vrt = zone_export.names(
                        [c for c, _ in cells_layers], year, len(years) > 1
                    )
                    written = zone_export.write_zones(
                        args.output, cells_layers, t, stems, vrt, target, colors
                    )
                    rows.append((f"{year}" if year is not None else "map", written[-1]))
                    rows += [("", w) for w in written[:-1] if w.endswith(".tif")]
            except InputError:  # as above: the folder this run began is removed whole
                outputs.remove(args.output, zone_export.KIND)
                raise
    what = f"band {args.band}" if first.variable == "embedding" else first.variable
    common.print_summary(
        f"efm export: {args.input} ({what}, collection of {len(cells_layers)} zones) -> "
        + ("one mosaic COG in EPSG:4326" if args.mosaic else "a COG per zone + VRT in EPSG:4326"),
        [
            ("zones", ", ".join(f"{c.name} ({lay.crs})" for c, lay in cells_layers)),
            (
                "EPSG:4326 grid",
                f"{target.width} x {target.height} px of {target.dx:.3g} x {target.dy:.3g} deg",
            ),
            ("rule", "each pixel: the pixel holding its centre in its own zone's store"),
            *rows,
            ("wall time", f"{clock.seconds:.1f} s"),
        ],
    )
    return 0
