"""`efm label --image file.tif`: an RGB raster (local, or any URL GDAL reads: https://, /vsis3/)
under the store, served as Web Mercator tiles by the labelling page's own server.

Each tile is rasterio.warp.reproject of the image's first three bands (one band: grey) into the
tile's 256 x 256 grid (bilinear), the image's overviews taken when the tile is coarser. Values
are stretched to 0-255 by the image's 2-98 % range (uint8 images are shown as they are); no data
(the image's mask) is transparent. Refused at start, one line: no CRS, or no overlap with the store.
"""

from __future__ import annotations

import threading

import numpy as np

from label_page import tiles
from transforms.core.errors import InputError


class Imagery:
    def __init__(self, path: str, store_info, flag: str = "--image"):
        import pyproj
        import rasterio
        from affine import Affine
        from rasterio.warp import transform_bounds

        try:
            self.src = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(flag, f"cannot read {path} as a raster: {str(exc)[:200]}") from None
        src = self.src
        if src.crs is None:
            raise InputError(
                flag, f"{path} has no CRS: the page cannot place it; give the file its CRS first"
            )
        if src.count not in (1, 3, 4):
            raise InputError(flag, f"{path} has {src.count} bands; expected RGB (3) or grey (1)")
        i = store_info
        corners = (np.array([0, i.width, 0, i.width]), np.array([0, 0, i.height, i.height]))
        xs, ys = Affine(*i.transform[:6]) * corners
        store_box = transform_bounds(
            pyproj.CRS(i.crs), src.crs, xs.min(), ys.min(), xs.max(), ys.max()
        )
        left, bt, r, t = src.bounds
        if not (
            left < store_box[2] and r > store_box[0] and bt < store_box[3] and t > store_box[1]
        ):
            raise InputError(
                flag,
                f"{path} does not overlap the store ({src.crs.to_string()} bounds "
                f"{tuple(round(v, 3) for v in src.bounds)}, the store's there "
                f"{tuple(round(v, 3) for v in store_box)})",
            )
        self.path = path
        self.bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        self.web_bounds = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
        self.low, self.high = self._stretch()
        self._lock = threading.Lock()  # one rasterio dataset: one reader at a time

    def _stretch(self):
        src = self.src
        if src.dtypes[0] == "uint8":
            return np.zeros(3), np.full(3, 255.0)
        scale = max(1, max(src.width, src.height) // 1024)
        data = src.read(
            self.bands,
            out_shape=(3, max(1, src.height // scale), max(1, src.width // scale)),
            masked=True,
        )
        low = np.array([np.percentile(b.compressed(), 2) if b.count() else 0 for b in data])
        high = np.array([np.percentile(b.compressed(), 98) if b.count() else 1 for b in data])
        return low, high

    def overlaps(self, z: int, x: int, y: int) -> bool:
        left, bottom, right, top = tiles.tile_bounds(z, x, y)
        b = self.web_bounds
        return left < b[2] and right > b[0] and bottom < b[3] and top > b[1]

    def tile(self, z: int, x: int, y: int) -> np.ndarray | None:
        """(256, 256, 4) uint8 RGBA, or None off the image."""
        import rasterio
        from rasterio.transform import from_bounds
        from rasterio.warp import Resampling, reproject

        if not self.overlaps(z, x, y):
            return None
        size = tiles.TILE
        dst_transform = from_bounds(*tiles.tile_bounds(z, x, y), size, size)
        out = np.zeros((3, size, size), dtype=np.float32)
        with self._lock:
            reproject(
                rasterio.band(self.src, self.bands),
                out,
                dst_transform=dst_transform,
                dst_crs="EPSG:3857",
                resampling=Resampling.bilinear,
                dst_nodata=np.nan,  # outside the image, and the image's own no data
            )
        valid = np.isfinite(out).all(axis=0)
        span = np.where(self.high > self.low, self.high - self.low, 1)[:, None, None]
        scaled = np.clip((np.nan_to_num(out) - self.low[:, None, None]) / span, 0, 1)
        rgba = np.zeros((size, size, 4), dtype=np.uint8)
        rgba[..., :3] = (scaled * 255).round().astype(np.uint8).transpose(1, 2, 0)
        rgba[..., 3] = np.where(valid, 255, 0)
        return rgba


def basemap_origin(template: str, flag: str = "--basemap") -> str:
    """An XYZ tile template (https://host/{z}/{x}/{y}.png) -> the origin its tiles come from, for
    the page's Content-Security-Policy; {s} (a subdomain, Leaflet's a/b/c) as the host's first
    label becomes *. Refused: no {z}, {x} or {y}, not http(s), other placeholders."""
    import re
    import urllib.parse

    missing = [p for p in ("{z}", "{x}", "{y}") if p not in template]
    if missing:
        raise InputError(
            flag,
            f"{template[:200]!r} has no {', '.join(missing)}: give an XYZ tile template, "
            "e.g. https://tile.example.org/{z}/{x}/{y}.png",
        )
    unknown = set(re.findall(r"\{[^}]*\}", template)) - {"{z}", "{x}", "{y}", "{s}", "{r}"}
    if unknown:
        raise InputError(flag, f"unknown placeholder {sorted(unknown)[0]} (known: z, x, y, s, r)")
    url = urllib.parse.urlsplit(template)
    host = url.netloc
    if url.scheme not in ("http", "https") or not host or any(c in host for c in " '\";@"):
        raise InputError(flag, f"{template[:200]!r}: expected an http:// or https:// tile URL")
    if "{s}" in host:
        if not host.startswith("{s}.") or "{s}" in host[3:]:
            raise InputError(flag, "{s} may only be the first part of the host ({s}.tile.example)")
        host = "*" + host[3:]
    if "{" in host:
        raise InputError(flag, f"{template[:200]!r}: only {{s}} may stand in the host")
    return f"{url.scheme}://{host}"
