"""The start-up checks of `efm label` (pipelines/label.py) and `efm.label` (efm/label.py), one
implementation: every input is checked before the server starts, a bad one refused with InputError
naming the command's flag (`--tuning: port`) or the function's parameter (`port`), as `Names` spells it.
Nothing is written here: `outputs.check_output` only looks.
"""

from __future__ import annotations

import dataclasses
import errno
import os

from label_page import imagery, polygons
from label_page import points as pointlib
from label_page.view import default_year
from transforms.core.errors import InputError
from transforms.storage import outputs


@dataclasses.dataclass(frozen=True)
class Names:
    """How a caller names its inputs in a refusal, and the few words that differ between them."""

    output: str
    port: str
    basemap: str
    image: str
    per_polygon: str
    points: str
    year: str
    not_geojson: str  # after "<output>: "
    port_range: str  # before ", got <port>"
    port_in_use: str  # after "port N on 127.0.0.1 is in use; "


# the port and the points per polygon are `efm label --tuning` keys: a refusal reads as the
# key's own checks do (`--tuning: port: ...`, pipelines/tuning_keys.py)
COMMAND = Names(
    output="--output", port="--tuning: port", basemap="--basemap", image="--image",
    per_polygon="--tuning: points_per_polygon", points="--points", year="--year",
    not_geojson="the points are written as GeoJSON; name the file e.g. points.geojson",
    port_range="must be 0-65535 (0 = any free port)",
    port_in_use="pass another (--tuning port=N), or --tuning port=0 for any free one",
)  # fmt: skip
API = Names(
    output="output", port="port", basemap="basemap", image="image",
    per_polygon="points_per_polygon", points="points", year="year",
    not_geojson="the page's Save writes GeoJSON; name it e.g. points.geojson",
    port_range="must be an int 0-65535 (0 = any free port)",
    port_in_use="pass another, or port=0 for any",
)  # fmt: skip


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_options(
    names: Names, *, output: str | None, port, basemap: str | None, per_polygon
) -> str | None:
    """The inputs checked without reading anything -> the basemap's origin (None: no basemap).
    `output` None: a fresh file the caller makes later (nothing to check)."""
    if output is not None and not output.lower().endswith((".geojson", ".json")):
        raise InputError(names.output, f"{output}: {names.not_geojson}")
    if not _is_int(port) or not 0 <= port <= 65535:
        raise InputError(names.port, f"{names.port_range}, got {port!r}")
    origin = imagery.basemap_origin(basemap, names.basemap) if basemap is not None else None
    if not _is_int(per_polygon):
        raise InputError(names.per_polygon, f"expected an int, got {type(per_polygon).__name__}")
    if not 0 <= per_polygon <= polygons.MAX_PER_POLYGON:
        raise InputError(
            names.per_polygon,
            f"must be 0..{polygons.MAX_PER_POLYGON} (0: every pixel centre inside, capped), "
            f"got {per_polygon}",
        )
    return origin


def year_of(names: Names, info, year: int | None) -> int:
    """The year shown: `year`, or the store's last; one the store lacks is refused."""
    try:
        return default_year(info, year)
    except InputError as exc:
        raise InputError(names.year, str(exc).split(": ", 1)[1]) from None


@dataclasses.dataclass
class Inputs:
    classes: list[str]
    loaded: list  # the Points to start from
    loaded_polygons: list  # [(id, label, ring)] of a points file
    image: imagery.Imagery | None


def open_inputs(
    names: Names,
    info,
    classes: list[str],
    *,
    points=None,
    image: str | None = None,
    output: str | None = None,
    overwrite: bool = False,
    inputs: dict | None = None,
) -> Inputs:
    """The output (an efm points file at most, and not an input), the image and the points to start
    from (a file `efm sample` reads, or a GeoDataFrame) -> Inputs. `classes` empty: the points'."""
    if output is not None:
        outputs.check_output(
            output, "points", flag=names.output, inputs=inputs or {}, overwrite=overwrite
        )
    picture = imagery.Imagery(image, info, flag=names.image) if image is not None else None
    loaded, loaded_polygons = [], []
    if isinstance(points, (str, os.PathLike)):
        path = os.fspath(points)
        loaded, classes = pointlib.load(path, info, classes, flag=names.points)
        loaded, loaded_polygons = pointlib.split_polygons(path, loaded)
    elif points is not None:
        import pandas as pd

        if not isinstance(points, pd.DataFrame):
            raise InputError(
                names.points,
                "expected a GeoDataFrame or a points file with a 'label' column, got "
                f"{type(points).__name__}",
            )
        loaded, classes = pointlib.load("the points GeoDataFrame", info, classes, names.points, points)  # fmt: skip
    return Inputs(classes, loaded, loaded_polygons, picture)


def listen(names: Names, port: int, **server):
    """The page's server bound to 127.0.0.1:port (before any slow read: a busy port fails at once);
    `server`: make_server's keywords."""
    from label_page import server as serverlib

    try:
        return serverlib.make_server(None, port, **server)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                names.port, f"port {port} on 127.0.0.1 is in use; {names.port_in_use}"
            ) from None
        raise InputError(
            names.port, f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"
        ) from None
