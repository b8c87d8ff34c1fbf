"""`efm label`: a local page to click labelled points on the store's map, with a live k-NN preview.

    store -> StoreView (one year, read by window) -> HTTP server on 127.0.0.1 -> "Save" -> points.geojson

Not a Beam pipeline: one process serves the page until Ctrl-C. Nothing is written until the
page's "Save"; every input is checked before the server starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from label_page import points as pointlib
from label_page import server as serverlib
from label_page import startup
from label_page.view import StoreView
from pipelines import common, tuning, tuning_keys
from transforms.core import tuning as tuning_syntax
from transforms.core.errors import InputError
from transforms.products import export
from transforms.storage import readers, store

DEFAULT_PORT = tuning_keys.DEFAULT_PORT


# points_per_polygon, port, colors, rgb: --tuning keys (pipelines/tuning_keys.py); a refusal of
# one after parsing reads as the key's own checks do (`--tuning: colors: ...`)
COLORS_FLAG = "--tuning: colors"


def build_parser():
    parser = common.make_parser(
        "efm label",
        "Serve a local page that shows the store as a map: click labelled points, "
        "see a k-NN preview of the view after each click, save the points as GeoJSON for `efm sample`.",
        beam_options=False,
    )
    parser.add_argument(
        "--embeddings", required=True, help="embedding store (Zarr, local path or gs://)"
    )
    parser.add_argument(
        "--output",
        required=True,
        help="where Save writes the points: GeoJSON in EPSG:4326 with a 'label' property, e.g. points.geojson",
    )
    parser.add_argument(
        "--classes",
        help="class names, e.g. water,forest,crops (default: the labels of --points; more can be added on the page)",
    )
    parser.add_argument(
        "--year", type=int, help="the year shown and previewed (default: the store's last)"
    )
    parser.add_argument(
        "--points",
        help="existing points to start from (any file `efm sample` reads, with a 'label' column); their labels must be among --classes",
    )
    parser.add_argument(
        "--basemap",
        help="imagery under the store: an XYZ tile URL template with {z}, {x} and {y}, e.g. "
        "https://tiles.example.org/{z}/{x}/{y}.png (your provider, your key; none by default). "
        "The page loads tiles from there and nowhere else outside this machine",
    )
    parser.add_argument(
        "--image",
        help="an RGB raster (GeoTIFF/COG, local or a URL GDAL reads) in any CRS, shown under the "
        "store as tiles served by efm label itself",
    )
    tuning.add_flag(parser, "label")
    common.add_overwrite(parser, "an existing points file efm wrote, on Save")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = common.own_args(build_parser(), argv)
    names = startup.COMMAND
    origin = startup.check_options(
        names,
        output=args.output,
        port=args.port,
        basemap=args.basemap or None,
        per_polygon=args.points_per_polygon,
    )
    classes = pointlib.parse_classes(args.classes)
    colours = pointlib.parse_colours(args.colors, flag=COLORS_FLAG)
    unknown = [name for name in colours if classes and name not in classes]
    if unknown and not os.path.exists(
        args.colors
    ):  # a JSON palette may name more labels than these classes
        raise InputError(
            COLORS_FLAG, f"{unknown[0]!r} is not one of --classes ({', '.join(classes)})"
        )
    ds = store.open_embeddings(args.embeddings)
    info = readers.store_info(args.embeddings, ds)
    year = startup.year_of(names, info, args.year)
    rgb = None
    if args.rgb:
        rgb = tuning_syntax.value_list(args.rgb)
        if len(rgb) != 3 or any(b not in info.bands for b in rgb):
            raise InputError(
                "--tuning",
                f"rgb: expected three bands of the store, e.g. rgb={';'.join(export.DEFAULT_RGB)}, "
                f"got {args.rgb!r}",
            )
    inputs = {"--embeddings": args.embeddings, **({"--points": args.points} if args.points else {})}
    start = startup.open_inputs(
        names,
        info,
        classes,
        points=args.points or None,
        image=args.image or None,
        output=args.output,
        overwrite=args.overwrite,
        inputs=inputs,
    )
    classes, loaded = start.classes, start.loaded
    httpd = startup.listen(names, args.port, basemap_origin=origin)
    with httpd:
        print(
            f"efm label: reading a sample of {args.embeddings} ({year}) for the false colour...",
            flush=True,
        )
        view = StoreView(info, year)
        meta = {
            "embeddings": args.embeddings,
            "year": year,
            "crs": "EPSG:4326",
            "efm_version": store.tool_version(),
        }
        session = serverlib.Session(
            view,
            classes,
            loaded,
            args.output,
            overwrite=args.overwrite,
            rgb=rgb,
            meta=meta,
            colours=colours,
            basemap=args.basemap,
            image=start.image,
            per_polygon=args.points_per_polygon,
            loaded_polygons=start.loaded_polygons,
        )
        httpd.RequestHandlerClass.session = session
        outside = sum(p.row is None for p in loaded)
        if outside:
            print(
                f"efm label: {outside} of the {len(loaded)} points of {args.points} lie outside the store: kept in the file, not shown"
            )
        print(
            f"efm label: open http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C to stop)",
            flush=True,
        )
        try:
            httpd.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
    if session.saved is None:
        print(f"efm label: stopped; nothing saved to {args.output}")
    else:
        print(f"efm label: stopped; {args.output} holds {session.saved} points (last Save)")
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    return common.run("efm label", main, argv)


if __name__ == "__main__":
    sys.exit(run())
