"""Each command's `--tuning` keys (docs/tuning.md lists them; pipelines/tuning.py applies them).

A key replaces a flag of the same name (`chunk_size` was `--chunk-size`): the old flag is
refused with a hint (pipelines/tuning.MOVED). One tuple per command; a command with none has
no --tuning.
"""

from __future__ import annotations

from transforms.core import tuning
from transforms.core.checks import MAX_SEED
from transforms.core.tuning import Key


def _positive_integer(value) -> str | None:
    return None if value > 0 else "must be a positive integer"


def _positive_number(value) -> str | None:
    return None if tuning.positive(value) is None else "must be a positive number"


# tests/test_surface.py checks these against transforms/sources/earthengine.py and
# transforms/storage/zarr_source.py (not imported here: every command imports this module)
EE_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
EE_HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
ZARR_GRIDS = ("source", "utm")

EXTRACT = (
    Key(
        "collection",
        str,
        EE_COLLECTION,
        "Earth Engine image collection id (the satellite embedding)",
        lambda v: None if v.strip() else "must be a collection id",
    ),
    Key(
        "ee_api_url",
        str,
        EE_HIGH_VOLUME_URL,
        "Earth Engine API base URL (the high-volume endpoint)",
        lambda v: None if v.strip() else "must be a URL",
    ),
    Key(
        "ee_project",
        str,
        None,
        "Cloud project for Earth Engine requests (default: the credentials' project)",
        lambda v: None if v.strip() else "must be a Cloud project id",
    ),
    Key(
        "scale",
        float,
        None,
        "pixel size in CRS units (default: 10; with --source zarr and grid=source, the store's)",
        lambda v: None if tuning.positive(v) is None else "must be a positive number of CRS units",
    ),
    Key(
        "grid",
        str,
        None,
        "with --source zarr: source = the store's own pixels (default in a projected CRS); utm = "
        "the --crs / scale grid, nearest pixel (default in degrees or with --crs or scale)",
        choices=ZARR_GRIDS,
    ),
    Key(
        "split_zones",
        bool,
        False,
        "one store per UTM zone + an index even when one zone holds the area (without it: "
        "only when no one zone holds the area)",
    ),
    Key(
        "chunk_size",
        int,
        1024,  # pipelines/extract_sizing.py DEFAULT_CHUNK_SIZE (tests/test_surface.py checks)
        "chunk side in pixels, at least 128 (transforms/core/grid.py MIN_CHUNK_SIZE); a multiple "
        "of request_tile_size when that is given",
    ),
    Key(
        "request_tile_size",
        int,
        None,
        "square request tile side in pixels; must divide chunk_size "
        "(default: the fewest requests that fit one request's 48 MiB)",
        _positive_integer,
    ),
    Key(
        "transfer_dtype",
        str,
        "auto",
        "dtype on the wire: int8 quantises on the server (lossless for the embedding collection, "
        "4x fewer requests); auto = int8 for the embedding collection, float32 otherwise",
        choices=("auto", "int8", "float32"),
    ),
    Key(
        "max_concurrent_requests",
        int,
        None,
        "cap on Earth Engine requests in flight across all workers of the job (default 40, the "
        "per-project quota); with --source cog or zarr, reads in flight on this machine (default 8)",
        _positive_integer,
    ),
    Key(
        "max_requests_per_second",
        float,
        100.0,
        "cap on requests per second across all workers",
        _positive_number,
    ),
    Key(
        "threads_per_worker",
        int,
        None,
        "request threads per shard; with --source cog or zarr, reads in flight per worker "
        "(default: the cap split over local workers; on Dataflow 10, or 8 with --source cog or zarr)",
        _positive_integer,
    ),
    Key(
        "worker_memory_gb",
        float,
        2.0,  # pipelines/extract_sizing.py DEFAULT_WORKER_MEMORY_GB (tests/test_surface.py checks)
        "memory one worker process may use (locally: this machine's share for the whole run); "
        "sets how many chunks a process holds while they are fetched",
        _positive_number,
    ),
    Key(
        "max_retries",
        int,
        8,
        "retries per request on 429/5xx/timeouts (0 = give up at the first failure)",
        lambda v: None if v >= 0 else "must be 0 or more (0 = give up at the first failure)",
    ),
    Key(
        "retry_initial_delay",
        float,
        1.0,
        "first backoff in seconds, doubled each retry, with jitter",
        lambda v: (
            None if tuning.positive(v) is None else "must be a positive number of seconds (e.g. 1)"
        ),
    ),
)

VERIFY = (
    Key(
        "threads",
        int,
        4,
        "chunks read and decoded at once (memory: one chunk each)",
        _positive_integer,
    ),
)

# the other commands' keys (each command's own tuple; empty = no --tuning)
CHANGE: tuple[Key, ...] = ()
# `efm demo --small` was used only by tests (a quick check): a key
DEMO = (
    Key(
        "small",
        bool,
        False,
        "a small area (256 x 320 px) for a quick check (about 30 s)",
    ),
)

# tests/test_tuning_surfe.py checks these against transforms/products/export.py,
# label_page/polygons.py, label_page/startup.py and sample_data/generate.py (not imported here)
MAX_PNG_SIZE = 4096
DEFAULT_FLOAT_NODATA = -9999.0
DEFAULT_RGB = "A01,A16,A09"
MAX_PER_POLYGON = 1000
DEFAULT_PORT = 8765
DEFAULT_SEED = 7
MIN_TILE_SIZE = 64
# A list inside one KEY=VALUE item is `;`-separated (`rgb=A01;A16;A09`): `,` separates the items.
# In a @file.toml the value is a string and `,` works too (`rgb = "A01,A16,A09"`).
LIST_WORDS = "`;`-separated in KEY=VALUE (`,` in a @file.toml string)"


def _png_size(value) -> str | None:
    if 1 <= value <= MAX_PNG_SIZE:
        return None
    return (
        f"must be 1..{MAX_PNG_SIZE} pixels (the quicklook is a preview drawn 800 px wide; "
        "for full resolution open the GeoTIFF)"
    )


def _degrees(value) -> str | None:
    if 0 < value < 1:
        return None
    return "expected the mosaic's pixel size in degrees, 0 < size < 1, e.g. 0.0001"


EXPORT = (
    Key(
        "png_size",
        int,
        1024,
        f"longest side of the --png quicklook in pixels, 1..{MAX_PNG_SIZE}",
        _png_size,
    ),
    Key(
        "mosaic_scale",
        float,
        None,
        "with --mosaic: pixel size in degrees (default: the zones' pixel size in metres, "
        "east-west and north-south, at the area's centre latitude)",
        _degrees,
    ),
    Key(
        "nodata",
        float,
        DEFAULT_FLOAT_NODATA,
        "float maps: the GeoTIFF's nodata value written where the store holds NaN (a number, or "
        "nan to keep NaN)",
    ),
    Key(
        "colors",
        str,
        None,
        "class colours: LABEL=#rrggbb pairs, " + LIST_WORDS + ", or a JSON file "
        "{label: colour} (default: matplotlib's tab10/tab20)",
        lambda v: None if v.strip() else "must be LABEL=#rrggbb pairs or a JSON file",
    ),
    Key(
        "rgb",
        str,
        DEFAULT_RGB,
        "embedding stores: three bands for the false-colour PNG, " + LIST_WORDS,
    ),
)

LABEL = (
    Key(
        "points_per_polygon",
        int,
        0,
        f"points sampled from each drawn polygon (0: every pixel centre inside, "
        f"{MAX_PER_POLYGON} at most)",
        lambda v: (
            None
            if 0 <= v <= MAX_PER_POLYGON
            else f"must be 0..{MAX_PER_POLYGON} (0: every pixel centre inside, capped)"
        ),
    ),
    Key(
        "port",
        int,
        DEFAULT_PORT,
        "port on 127.0.0.1 (0: any free port; the URL printed says which)",
        lambda v: None if 0 <= v <= 65535 else "must be 0-65535 (0 = any free port)",
    ),
    Key(
        "colors",
        str,
        None,
        "class colours, as export's colors: LABEL=#rrggbb pairs, " + LIST_WORDS + ", or a JSON "
        "file {label: colour} (default: matplotlib's tab10/tab20)",
        lambda v: None if v.strip() else "must be LABEL=#rrggbb pairs or a JSON file",
    ),
    Key(
        "rgb",
        str,
        None,
        "start with these three bands as false colour instead of the first three principal "
        "components, " + LIST_WORDS + ", e.g. rgb=A01;A16;A09",
    ),
)

MAKE_SAMPLE_DATA = (
    Key(
        "tile_size",
        int,
        None,
        "side of each COG file in pixels (default: 512, --size small: 128; the public mirror's "
        f"is 8192), at least {MIN_TILE_SIZE}",
        lambda v: None if v >= MIN_TILE_SIZE else f"must be at least {MIN_TILE_SIZE} px",
    ),
    Key(
        "top_down",
        bool,
        False,
        "write rows top-down (negative y resolution, a standard COG); by default they run "
        "bottom-up, as in the public mirror's files",
    ),
    Key(
        "seed",
        int,
        DEFAULT_SEED,
        "random seed",
        lambda v: (
            None
            if 0 <= v <= 2**32 - 1
            else "must be a whole number in 0..4294967295 (numpy's limit)"
        ),
    ),
)
PREDICT: tuple[Key, ...] = ()
ZONAL: tuple[Key, ...] = ()


def _seed(value) -> str | None:
    return (
        None
        if 0 <= value <= MAX_SEED
        else f"must be a whole number in 0..{MAX_SEED} (numpy's limit)"
    )


def _crs(value) -> str | None:
    """A CRS pyproj knows (imported here only when the key is given: every command imports this)."""
    import pyproj

    try:
        pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError:
        return "unknown CRS (give e.g. EPSG:32631)"
    return None


def _points_crs(what: str) -> Key:
    return Key(
        "points_crs",
        str,
        None,
        f"CRS of the {what} coordinates when the file has none (default: the file's; a CSV's "
        "lon/lat columns: EPSG:4326)",
        _crs,
    )


TRAIN = (
    Key(
        "folds",
        int,
        5,
        "cross-validation folds",
        lambda v: None if v >= 2 else "cross-validation needs at least 2 folds",
    ),
    Key("seed", int, 0, "seed of the fold shuffling (and of the learning curve's draws)", _seed),
    Key(
        "target_units",
        str,
        "",
        "with --regressor: units of the target, recorded in the sidecar, e.g. Mg/ha (default: none)",
    ),
    Key(
        "drop_missing_target",
        bool,
        False,
        "with --regressor: train on the rows whose target is a finite number, dropping those "
        "without (NaN, e.g. an empty cell, or inf); without it such rows are refused",
    ),
)

CLUSTER = (
    Key(
        "sample_size",
        int,
        100_000,  # pipelines/cluster.py DEFAULT_SAMPLE_SIZE (tests/test_surface.py checks)
        "valid pixels drawn uniformly to fit k-means on (at least --clusters)",
        _positive_integer,
    ),
    Key("seed", int, 0, "seed of the sample and of k-means", _seed),
)

SAMPLE = (_points_crs("points'"),)
SIMILARITY = (_points_crs("reference points'"),)

# command -> its keys; a command not listed has no --tuning
KEYS: dict[str, tuple[Key, ...]] = {
    name: keys
    for name, keys in {
        "extract": EXTRACT,
        "verify": VERIFY,
        "change": CHANGE,
        "cluster": CLUSTER,
        "demo": DEMO,
        "export": EXPORT,
        "label": LABEL,
        "make-sample-data": MAKE_SAMPLE_DATA,
        "predict": PREDICT,
        "sample": SAMPLE,
        "similarity": SIMILARITY,
        "train": TRAIN,
        "zonal": ZONAL,
    }.items()
    if keys
}
