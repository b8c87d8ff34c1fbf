"""Earth Engine: credentials, the per-year mosaic expression, and one `computePixels` tile.

Everything here runs on workers as well as on the launcher. Credentials are never pickled:
each process builds them from its environment in `initialize()`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import threading
import typing

import numpy as np
from numpy.lib import recfunctions

from transforms.core import quantize
from transforms.core.chunks import ChunkSpec
from transforms.core.errors import CredentialsError, InputError, first_line
from transforms.core.grid import Grid, Window
from transforms.sources.fetch import RetryableError
from transforms.sources.grid_source import GridSource, count_read

DEFAULT_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
TOKEN_ENV = "EFM_EE_ACCESS_TOKEN"
SCOPES = (
    "https://www.googleapis.com/auth/earthengine",
    "https://www.googleapis.com/auth/cloud-platform",
)
EMBEDDING_BANDS = tuple(f"A{i:02d}" for i in range(64))
FLOAT_NODATA = -9999.0  # what masked pixels are unmasked to on the float transfer path
HTTP_POOL_SIZE = 64  # connections kept per host; > the default 10 so 40 threads reuse sockets


@dataclasses.dataclass(frozen=True)
class EarthEngineSettings:
    """Where and as whom to reach Earth Engine (no secrets: those come from the environment)."""

    project: str | None = None
    api_url: str = HIGH_VOLUME_URL
    request_timeout_s: float = 300.0


_lock = threading.Lock()
_initialized_with: EarthEngineSettings | None = None


def load_credentials():
    """A bearer token from EFM_EE_ACCESS_TOKEN, else application-default credentials."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        import google.oauth2.credentials

        return google.oauth2.credentials.Credentials(token)
    import google.auth
    import google.auth.exceptions

    try:
        credentials, _ = google.auth.default(scopes=list(SCOPES))
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise CredentialsError(str(exc).splitlines()[0][:120]) from None
    return credentials


def initialize(settings: EarthEngineSettings) -> None:
    """Initialise the `ee` client once per process (idempotent, thread-safe)."""
    global _initialized_with
    with _lock:
        if _initialized_with == settings:
            return
        import ee
        import requests
        import requests.adapters

        credentials = load_credentials()
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=HTTP_POOL_SIZE)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        ee.data._get_state().requests_session = session  # ee keeps a preset session
        import google.auth.exceptions

        try:
            ee.Initialize(credentials=credentials, project=settings.project, url=settings.api_url)
        except ee.EEException as exc:
            message = str(exc).splitlines()[0]
            if any(
                word in message.lower() for word in ("permission", "not registered", "forbidden")
            ):
                raise InputError(
                    "--tuning",
                    f"ee_project: these credentials may not use Earth Engine{' in project ' + settings.project if settings.project else ''}: "
                    f"{message} (the account needs roles/earthengine.viewer or .writer and roles/serviceusage.serviceUsageConsumer "
                    "on a project registered for Earth Engine)",
                ) from None
            if "project" in message.lower():
                raise InputError(
                    "--tuning",
                    f"ee_project: Earth Engine needs a Cloud project: pass --tuning "
                    f"ee_project=PROJECT ({message})",
                ) from None
            raise InputError(
                "--tuning",
                f"ee_api_url: cannot initialise Earth Engine at {settings.api_url}: {message}",
            ) from None
        except google.auth.exceptions.GoogleAuthError as exc:  # e.g. expired or revoked credentials
            raise CredentialsError(
                f"the credentials cannot get a token: {first_line(exc)}"
            ) from None
        except (
            OSError
        ) as exc:  # connection refused, DNS, TLS: Earth Engine is not reachable from here
            raise InputError(
                "--tuning",
                f"ee_api_url: cannot initialise Earth Engine at {settings.api_url}: cannot connect ({first_line(exc)[:200]})",
            ) from None
        ee.data.setMaxRetries(
            0
        )  # we retry ourselves: with jitter, counters and a clear final error
        ee.data.setDeadline(int(settings.request_timeout_s * 1000))
        _initialized_with = settings


def year_image(collection: str, year: int, bands: tuple[str, ...], transfer_dtype: str):
    """The year's mosaic of all UTM tiles, as the bands to transfer.

    int8 transfer quantises on the server (`sign(x) * sqrt(|x|) * 127.5`, rounded): the
    collection's values are de-quantised int8 codes, so this is lossless and a request
    carries 4x the pixels of float32. No-data is unmasked to a sentinel so it cannot be
    mistaken for a value.
    """
    import ee

    image = (
        ee.ImageCollection(collection)
        .filterDate(f"{year}-01-01", f"{year + 1}-01-01")
        .mosaic()
        .select(list(bands))
    )
    if transfer_dtype == "int8":
        codes = (
            image.abs().sqrt().multiply(quantize.SCALE).round().multiply(image.signum()).toInt8()
        )
        return codes.unmask(quantize.NODATA_CODE, False)
    return image.toFloat().unmask(FLOAT_NODATA, False)


def grid_params(grid: Grid, window: Window) -> dict:
    """The `grid` of a computePixels request for one window of the grid."""
    left, _, _, top = grid.window_bounds(window)
    return {
        "dimensions": {"width": window.cols, "height": window.rows},
        "affineTransform": {
            "scaleX": grid.scale,
            "shearX": 0,
            "translateX": left,
            "shearY": 0,
            "scaleY": -grid.scale,
            "translateY": top,
        },
        "crsCode": grid.crs,
    }


_NPY_HEADER_LOCK = threading.Lock()


def _npy_converter():
    """NUMPY_NDARRAY, decoded one body at a time: `numpy.load` parses the header with
    `ast.literal_eval`, and CPython 3.11's AST constructor is not thread-safe (python/cpython#106905:
    a rare `SystemError: AST constructor recursion depth mismatch` from parallel request threads)."""
    from ee import image_converter

    class LockedNumPyConverter(image_converter.NumPyConverter):
        def do_conversion(self, data: bytes):
            count_read(len(data))  # the response body: what this request transferred
            with _NPY_HEADER_LOCK:
                return super().do_conversion(data)

    return LockedNumPyConverter()


def compute_pixels(image, grid: Grid, window: Window, bands: tuple[str, ...]) -> np.ndarray:
    """One request: all bands of one tile -> (rows, cols, bands) in the transfer dtype.

    Transient failures (429, 5xx, timeouts, broken or truncated bodies) raise RetryableError.
    """
    import ee
    import requests

    params = {
        "expression": image,
        "fileFormat": _npy_converter(),
        "bandIds": list(bands),
        "grid": grid_params(grid, window),
    }
    try:
        structured = ee.data.computePixels(params)
    except ee.EEException as exc:
        status = getattr(getattr(exc.__context__, "resp", None), "status", None)
        if status is not None and (int(status) == 429 or int(status) >= 500):
            raise RetryableError(f"HTTP {status}: {exc}") from exc
        if status is None and "timed out" in str(exc).lower():
            raise RetryableError(str(exc)) from exc
        raise
    except (
        requests.exceptions.RequestException,
        http.client.HTTPException,
        ConnectionError,
        TimeoutError,
    ) as exc:
        raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
    except ValueError as exc:  # numpy could not parse the body: truncated in transit
        raise RetryableError(f"unreadable body: {exc}") from exc
    if structured.shape != (window.rows, window.cols):
        raise RetryableError(f"got shape {structured.shape}, expected {(window.rows, window.cols)}")
    return recfunctions.structured_to_unstructured(structured)


def to_store_values(tile: np.ndarray, transfer_dtype: str, store_dtype: str) -> np.ndarray:
    """Transferred pixels -> the store's dtype and fill (NaN for float32, -128 for int8)."""
    if transfer_dtype == "int8":
        codes = tile.astype(np.int8, copy=False)
        return codes if store_dtype == "int8" else quantize.dequantize(codes)
    values = tile.astype(np.float32, copy=False)
    values = np.where(values == FLOAT_NODATA, np.float32(np.nan), values)
    return quantize.quantize(values) if store_dtype == "int8" else values


def check_collection(collection: str, years: list[int]) -> None:
    """Fail fast on an unknown collection or a year it has no images for."""
    import ee

    try:
        asset = ee.data.getAsset(collection)
    except ee.EEException as exc:
        raise InputError(
            "--tuning",
            f"collection: {collection!r} is not an Earth Engine collection you can read: {str(exc).splitlines()[0]}",
        ) from None
    if asset.get("type") not in ("IMAGE_COLLECTION", "ImageCollection"):
        raise InputError(
            "--tuning",
            f"collection: {collection!r} is a {asset.get('type')}, not an image collection",
        )
    sizes = ee.List(
        [
            ee.ImageCollection(collection).filterDate(f"{y}-01-01", f"{y + 1}-01-01").size()
            for y in years
        ]
    ).getInfo()
    empty = [y for y, n in zip(years, sizes) if not n]
    if empty:
        raise InputError("--years", f"{collection} has no images for {', '.join(map(str, empty))}")


MAX_REGION_VERTICES = 2000  # a bigger AOI is sent as its convex hull: a small request, a check that errs on the lenient side


PUBLIC_PREFIX = "projects/earthengine-public/assets/"


def canonical_collection(collection: str) -> str:
    """`projects/earthengine-public/assets/X` and `X` name one public collection."""
    collection = collection.strip("/")
    return collection.removeprefix(PUBLIC_PREFIX)


def check_coverage(collection: str, years: list[int], aoi_lonlat) -> dict:
    """Refuse an area where the collection has no image in some year (it would give a store
    that is 100 % no-data for that year, marked complete).

    One request (as the count per year it replaces): the ids (`system:index`) and versions
    (`system:version`, where the server gives them) of the images over the area, per year.
    Returns what the store records about the source: the collection and a fingerprint of the
    images the run reads (`ee_images`, `ee_images_sha256`), which `--resume` compares."""
    import ee
    import shapely

    region = (
        aoi_lonlat
        if aoi_lonlat.geom_type in ("Polygon", "MultiPolygon")
        else aoi_lonlat.convex_hull
    )
    if shapely.get_num_coordinates(region) > MAX_REGION_VERTICES or region.geom_type not in (
        "Polygon",
        "MultiPolygon",
    ):
        region = aoi_lonlat.convex_hull
    geometry = ee.Geometry(
        shapely.geometry.mapping(region), None, False
    )  # planar lon/lat, as the AOI was drawn
    images = ee.ImageCollection(collection).filterBounds(geometry)
    listed = ee.List(
        [
            images.filterDate(f"{y}-01-01", f"{y + 1}-01-01")
            .reduceColumns(ee.Reducer.toList(2, 1), ["system:index", "system:version"])
            .get("list")
            for y in years
        ]
    ).getInfo()
    empty = [y for y, rows in zip(years, listed) if not rows]
    if empty:
        west, south, east, north = aoi_lonlat.bounds
        raise InputError(
            "--bbox/--aoi",
            f"{collection} has no image over the area lon {west:.4f}..{east:.4f}, lat {south:.4f}..{north:.4f} "
            f"in {', '.join(map(str, empty))}: the store would hold no data; check the area (W,S,E,N order, lon/lat) and the years",
        )
    return images_record(collection, dict(zip(years, listed)))


def images_record(collection: str, listed: dict[int, list]) -> dict:
    """The fingerprint of the images a run reads: per year, the sorted (id, version) pairs, hashed."""
    lines = sorted(
        f"{year}\t{row[0]}\t{row[1] if len(row) > 1 and row[1] is not None else ''}\n"
        for year, rows in listed.items()
        for row in rows
    )
    return {
        "collection": collection,
        "ee_collection": canonical_collection(collection),
        "ee_images": len(lines),
        "ee_images_sha256": hashlib.sha256("".join(lines).encode()).hexdigest(),
    }


@dataclasses.dataclass
class EarthEngineSource(GridSource):
    """Tiles of the per-year mosaic through `computePixels`, all bands in one request."""

    counts_reads: typing.ClassVar[bool] = True  # (grid_source.count_read)

    collection: str = DEFAULT_COLLECTION
    settings: EarthEngineSettings = dataclasses.field(default_factory=EarthEngineSettings)
    transfer_dtype: str = "int8"

    def setup(self) -> None:
        initialize(self.settings)
        self._images: dict[int, object] = {}
        self._images_lock = threading.Lock()

    def _image(self, year: int):
        with self._images_lock:
            if year not in self._images:
                self._images[year] = year_image(
                    self.collection, year, self.bands, self.transfer_dtype
                )
            return self._images[year]

    def fetch(self, spec: ChunkSpec, tile: Window) -> np.ndarray:
        raw = compute_pixels(self._image(spec.year), self.grid, tile, self.bands)
        return to_store_values(raw, self.transfer_dtype, self.store_dtype)

    def __getstate__(self):  # never pickle the ee objects or the lock
        state = dict(self.__dict__)
        state.pop("_images", None)
        state.pop("_images_lock", None)
        return state
