"""`efm.label`: the labelling page of `efm label` inside a notebook, its points as a GeoDataFrame.

The same server as the command (label_page/: the page, its tiles, polygons, preview, suggestions
and spatial CV), started on 127.0.0.1 at a free port in a background thread of the kernel. The
`Labeller` it returns shows the page in an IFrame when a notebook displays it (`_repr_html_`), and
prints its URL in a plain console; `.points` is what the page has set so far (the page sends its
whole state after each change), in EPSG:4326 with a `label` column: what `efm.sample` takes.

    lab = efm.label(ds, classes=["water", "forest"])    # the map, in the cell's output
    ...                                                 # click points, draw polygons
    table = efm.sample(ds, lab.points, label_column="label")
    lab.close()                                         # or: with efm.label(...) as lab:

The IFrame loads http://127.0.0.1:PORT/ in the browser, so the browser must run on the machine of
the kernel (JupyterLab or Notebook on a laptop or workstation). On a remote JupyterHub, see the
README ("Label points", "In a notebook"): an SSH tunnel on the same port, or `efm label`.
"""

from __future__ import annotations

import html
import os
import tempfile
import threading
import weakref

import xarray as xr

from efm.embeddings import PATH_KEY
from transforms.core.errors import InputError
from transforms.storage import readers, store

POINT_COLUMNS = ["label", "polygon", "geometry"]
POLYGON_COLUMNS = ["polygon", "label", "pixels", "sampled", "fixed", "geometry"]


def label(
    ds,
    classes=None,
    points=None,
    basemap: str | None = None,
    image: str | None = None,
    *,
    year: int | None = None,
    points_per_polygon: int = 0,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    port: int = 0,
    height: int = 600,
) -> Labeller:
    """The labelling page over one store, served from this kernel; returns a `Labeller`.

    ``ds``: a store's path, or a Dataset `efm.open_embeddings` returned (the page shows the whole
    store it was opened from, and the Dataset's last year unless ``year`` is given).
    ``classes``: class names (a list, or ``"water,forest"``; more can be added on the page);
    default: the labels of ``points``. ``points``: points to start from: a GeoDataFrame (any CRS)
    or a file, with a ``label`` column (e.g. an earlier ``Labeller.points``). ``basemap``: an XYZ
    tile template ``https://host/{z}/{x}/{y}.png`` (your provider; none by default); ``image``: an
    RGB raster in any CRS. ``output``: where the page's Save button writes GeoJSON (default: a new
    temporary folder; ``.points`` needs no Save). ``port``: 0 for any free port of 127.0.0.1.

    Bad input raises InputError (one line naming the parameter) before the server starts.
    """
    # imported here: `import efm` stays free of the page's modules
    from label_page import server as serverlib
    from label_page import startup
    from label_page.view import StoreView

    names = startup.API
    path, info, year = _store(ds, year)
    classes = _classes(classes)
    if output is not None:
        output = os.fspath(output)
    origin = startup.check_options(
        names, output=output, port=port, basemap=basemap, per_polygon=points_per_polygon
    )
    if isinstance(height, bool) or not isinstance(height, int) or height < 100:
        raise InputError("height", f"the IFrame's height in pixels, 100 or more; got {height!r}")
    inputs = {"ds": path, **({"points": points} if isinstance(points, (str, os.PathLike)) else {})}
    start = startup.open_inputs(
        names,
        info,
        classes,
        points=points,
        image=os.fspath(image) if image is not None else None,
        output=output,
        overwrite=overwrite,
        inputs={k: os.fspath(v) for k, v in inputs.items()},
    )
    classes, loaded, loaded_polygons = start.classes, start.loaded, start.loaded_polygons
    if output is None:  # made once every input is checked: a refusal leaves no folder behind
        output = os.path.join(tempfile.mkdtemp(prefix="efm-label-"), "points.geojson")
    httpd = startup.listen(names, port, basemap_origin=origin, framable=True)
    try:
        session = serverlib.Session(
            StoreView(info, year),
            classes,
            loaded,
            output,
            overwrite=overwrite,
            rgb=None,
            meta={
                "embeddings": path,
                "year": year,
                "crs": "EPSG:4326",
                "efm_version": store.tool_version(),
            },
            basemap=basemap,
            image=start.image,
            per_polygon=points_per_polygon,
            loaded_polygons=loaded_polygons,
        )
        if loaded or loaded_polygons:  # the starting state sampled and fitted, as the page's first
            try:
                session.update(_state(loaded, loaded_polygons))
            except serverlib.BadRequest as exc:
                raise InputError("points", str(exc)) from None
    except BaseException:
        httpd.server_close()
        raise
    httpd.RequestHandlerClass.session = session
    return Labeller(httpd, session, height)


class Labeller:
    """The page of one `efm.label` call: its server runs until `.close()` (or the `with` block's
    end, or the kernel's). Display it in a notebook for the map; `.points`, `.polygons` read what
    the page has set so far."""

    def __init__(self, httpd, session, height: int = 600):
        self._httpd, self._session, self._height = httpd, session, height
        self.port = httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"efm-label-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._stop = weakref.finalize(self, _stop, httpd, self._thread)

    @property
    def closed(self) -> bool:
        return not self._stop.alive

    @property
    def output(self) -> str:
        """Where the page's Save button writes."""
        return self._session.output

    @property
    def classes(self) -> list[str]:
        return list(self._session.classes)

    def _collection(self) -> dict:
        from label_page import points as pointlib

        s = self._session
        with s.lock:
            pts, sampled = list(s.points), list(s.polygons.values())
        return pointlib.feature_collection(pts, s.view.info, s.meta, sampled)

    @property
    def points(self):
        """The page's points so far as a GeoDataFrame in EPSG:4326: ``label``, ``polygon`` (the
        polygon a point was sampled from, or None for a click or a starting point), ``geometry``
        (a pixel centre; a starting point keeps its own place): ``efm.sample(ds, lab.points,
        label_column="label")``. The same points the page's Save writes."""
        features = [
            f
            for f in self._collection()["features"]
            if f["properties"].get("efm_role") != "polygon"
        ]
        return _frame(
            features,
            lambda p: {"label": p["label"], "polygon": p.get("efm_polygon")},
            POINT_COLUMNS,
        )

    @property
    def polygons(self):
        """The polygons drawn so far (GeoDataFrame, EPSG:4326): ``polygon`` (its id), ``label``,
        ``pixels`` (store pixels inside), ``sampled`` (of them, in ``.points``), ``fixed`` (a
        ring that crossed itself, fixed with shapely's make_valid), ``geometry``."""
        features = [
            f
            for f in self._collection()["features"]
            if f["properties"].get("efm_role") == "polygon"
        ]
        return _frame(
            features,
            lambda p: {k: p["efm_polygon" if k == "polygon" else k] for k in POLYGON_COLUMNS[:-1]},
            POLYGON_COLUMNS,
        )

    def close(self) -> None:
        """Stop the server and free its port (the page then stops answering). Idempotent."""
        self._stop()

    def __enter__(self) -> Labeller:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<efm.Labeller: closed (was {self.url})>"
        return (
            f"<efm.Labeller: open {self.url} in a browser on this machine "
            f"({self._session.view.info.path}, {self._session.view.year}); .points, .close()>"
        )

    def _repr_html_(self) -> str:
        if self.closed:
            return f"<p>efm.label: closed (was {html.escape(self.url)})</p>"
        url = html.escape(self.url, quote=True)
        return (
            f'<iframe src="{url}" width="100%" height="{self._height}" style="border: 0" '
            f'title="efm label"></iframe>'
            f'<p style="font-size: smaller">efm.label: <a href="{url}" target="_blank" '
            f'rel="noopener noreferrer">{url}</a> (also in a tab of this browser; on a remote '
            "Jupyter, see the README: an SSH tunnel on this port)</p>"
        )


def _stop(httpd, thread) -> None:
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def _frame(features: list, props, columns: list):
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import shape

    rows = [props(f["properties"]) for f in features]
    return gpd.GeoDataFrame(
        {  # object columns: a click's polygon stays None (not pandas 3's NaN of a str column)
            c: pd.Series([r[c] for r in rows], dtype=object) for c in columns[:-1]
        },
        geometry=[shape(f["geometry"]) for f in features],
        crs="EPSG:4326",
    )[columns]


def _store(ds, year):
    """ds -> (the store's path, its StoreInfo, the year shown)."""
    from label_page import startup

    if isinstance(ds, (str, os.PathLike)):
        path, wanted = os.fspath(ds), None
    elif isinstance(ds, xr.Dataset) and "embedding" in ds:
        path = ds.encoding.get(PATH_KEY)
        if not path:
            raise InputError(
                "ds",
                "this Dataset does not come from a store efm.open_embeddings opened (no path in "
                "ds.encoding); pass the store's path",
            )
        wanted = [int(str(t)[:4]) for t in ds["time"].values]
    elif type(ds).__name__ == "EmbeddingCollection":
        raise InputError(
            "ds",
            "a collection holds one store per UTM zone and the page shows one store: pass the "
            "path of the zone's store you label",
        )
    else:
        raise InputError(
            "ds",
            "expected an embedding store's path or the Dataset efm.open_embeddings returns, got "
            f"{type(ds).__name__}",
        )
    raw = store.open_embeddings(path, flag="ds")
    info = readers.store_info(path, raw, flag="ds")
    if year is None and wanted:
        year = max(y for y in wanted if y in info.years) if set(wanted) & set(info.years) else None
    return path, info, startup.year_of(startup.API, info, year)


def _classes(classes) -> list[str]:
    from label_page import points as pointlib

    if classes is None:
        return []
    if isinstance(classes, str):
        return pointlib.parse_classes(classes, "classes")
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise InputError(
            "classes", f"expected a list of class names, e.g. ['water', 'forest'], got {classes!r}"
        )
    names = [c.strip() for c in classes]
    if any(not n for n in names):
        raise InputError("classes", f"an empty class name in {list(classes)!r}; name each class")
    for name in names:
        problem = pointlib.name_problem(name)
        if problem:
            raise InputError("classes", f"class {name[:40]!r} {problem}; use a shorter plain name")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError("classes", f"class {twice[0]!r} is given twice; name each class once")
    return names


def _state(loaded, loaded_polygons) -> dict:
    """The body the page sends to /api/update, for the starting points and polygons."""
    return {
        "points": [{"id": p.id, "label": p.label, "row": p.row, "col": p.col} for p in loaded],
        "polygons": [{"id": pid, "label": lab, "ring": ring} for pid, lab, ring in loaded_polygons],
    }
