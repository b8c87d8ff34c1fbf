"""Exporting a collection of maps: one COG per zone plus a VRT in EPSG:4326, or one mosaic COG.

    <out>/.efm-product       the folder is efm's (kind "cog-collection"): --overwrite may replace it
    <out>/utm-31n.tif        each zone's map, in its zone's CRS, as `efm export` writes a store's
    <out>/utm-31n.vrt        that COG warped to the common EPSG:4326 grid, only the block of
                             pixels whose centre is in the zone's cell (nearest neighbour)
    <out>/map.vrt            the zones' warped VRTs side by side: the whole area in EPSG:4326
    (several years: utm-31n_2021.tif, utm-31n_2021.vrt, map_2021.vrt, ...)

Seams: on a lon/lat grid a cell is a rectangle of whole pixels (its columns are those whose
centre longitude is in the cell's 6 degrees), so each zone's warped VRT covers exactly the pixels
whose centre is in its cell and they tile the grid without overlap; GDAL's nearest-neighbour warp
takes the zone pixel holding each pixel centre (exact transformer, no approximation). That is the
collection's rule (transforms/core/zones.py): no gap, nothing twice, the same values as the
`--mosaic` COG on the same grid.
"""

from __future__ import annotations

import dataclasses
import html
import os

import numpy as np

from transforms.core.grid import Window
from transforms.core.zones import Cell
from transforms.products import export, export_layer
from transforms.products import zone_mosaic as zm

KIND = "cog-collection"
MOSAIC_BLOCK = 512  # output window (pixels a side) the mosaic is computed by
GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


def zone_stem(cell: Cell) -> str:
    return f"utm-{cell.name.lower()}"


def names(cells: list[Cell], year: int | None, several: bool) -> tuple[dict[Cell, str], str]:
    """The file stems of one year's export: {cell: "utm-31n[_2021]"}, "map[_2021]"."""
    suffix = f"_{year}" if several and year is not None else ""
    return {c: zone_stem(c) + suffix for c in cells}, "map" + suffix


def grid_for(area_lonlat, scale_m: float, degrees: float | None = None) -> zm.Target:
    """The EPSG:4326 grid of a collection's mosaic and VRT: pixels `degrees` a side, or by default
    `scale_m` metres east-west and north-south at the area's centre latitude."""
    west, south, east, north = area_lonlat
    if degrees is None:
        dlon, dlat = zm.degrees_for(scale_m, (south + north) / 2.0)
    else:
        dlon = dlat = float(degrees)
    return zm.lonlat_target(area_lonlat, dlon, dlat)


def _nodata_text(nodata) -> str:
    return "nan" if isinstance(nodata, float) and np.isnan(nodata) else repr(nodata)


def _wkt(crs: str) -> str:
    from rasterio.crs import CRS

    return CRS.from_user_input(crs).to_wkt()


def _gt(t: tuple) -> str:
    a, b, c, d, e, f = t
    return ",".join(repr(float(v)) for v in (c, a, b, f, d, e))


def _inverse(t: tuple) -> tuple:
    a, b, c, d, e, f = t
    return (1.0 / a, 0.0, -c / a, 0.0, 1.0 / e, -f / e)


def warped_vrt(cog_name: str, layer: export_layer.Layer, target: zm.Target, block: Window) -> str:
    """A VRTWarpedDataset: the zone's COG (by name, beside the VRT) on `block` of `target`,
    nearest neighbour, exact transformer (no approximation)."""
    dtype = GDAL_TYPES[layer.dtype]
    dst = (
        target.dx,
        0.0,
        target.x0 + block.col * target.dx,
        0.0,
        -target.dy,
        target.y0 - block.row * target.dy,
    )
    nodata = _nodata_text(layer.nodata)
    return f"""<VRTDataset rasterXSize="{block.cols}" rasterYSize="{block.rows}" subClass="VRTWarpedDataset">
  <SRS dataAxisToSRSAxisMapping="2,1">{html.escape(_wkt(target.crs))}</SRS>
  <GeoTransform>{_gt(dst)}</GeoTransform>
  <VRTRasterBand dataType="{dtype}" band="1" subClass="VRTWarpedRasterBand">
    <NoDataValue>{nodata}</NoDataValue>
  </VRTRasterBand>
  <BlockXSize>{min(block.cols, 512)}</BlockXSize>
  <BlockYSize>{min(block.rows, 512)}</BlockYSize>
  <GDALWarpOptions>
    <WarpMemoryLimit>6.71089e+07</WarpMemoryLimit>
    <ResampleAlg>NearestNeighbour</ResampleAlg>
    <WorkingDataType>{dtype}</WorkingDataType>
    <Option name="INIT_DEST">NO_DATA</Option>
    <Option name="ERROR_OUT_IF_EMPTY_SOURCE_WINDOW">FALSE</Option>
    <SourceDataset relativeToVRT="1">{html.escape(cog_name)}</SourceDataset>
    <Transformer>
      <GenImgProjTransformer>
        <SrcGeoTransform>{_gt(layer.transform)}</SrcGeoTransform>
        <SrcInvGeoTransform>{_gt(_inverse(layer.transform))}</SrcInvGeoTransform>
        <DstGeoTransform>{_gt(dst)}</DstGeoTransform>
        <DstInvGeoTransform>{_gt(_inverse(dst))}</DstInvGeoTransform>
        <ReprojectTransformer>
          <ReprojectionTransformer>
            <SourceSRS>{html.escape(_wkt(layer.crs))}</SourceSRS>
            <TargetSRS>{html.escape(_wkt(target.crs))}</TargetSRS>
          </ReprojectionTransformer>
        </ReprojectTransformer>
      </GenImgProjTransformer>
    </Transformer>
    <BandList>
      <BandMapping src="1" dst="1">
        <SrcNoDataReal>{nodata}</SrcNoDataReal>
        <DstNoDataReal>{nodata}</DstNoDataReal>
      </BandMapping>
    </BandList>
  </GDALWarpOptions>
</VRTDataset>
"""


def mosaic_vrt(
    parts: list[tuple[str, Window]], layer: export_layer.Layer, target: zm.Target, colors
) -> str:
    """The whole area: each zone's warped VRT (by name) placed at its block of `target`."""
    dtype = GDAL_TYPES[layer.dtype]
    nodata = _nodata_text(layer.nodata)
    sources = "".join(
        f"""    <SimpleSource>
      <SourceFilename relativeToVRT="1">{html.escape(name)}</SourceFilename>
      <SourceBand>1</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{b.cols}" ySize="{b.rows}" />
      <DstRect xOff="{b.col}" yOff="{b.row}" xSize="{b.cols}" ySize="{b.rows}" />
    </SimpleSource>
"""
        for name, b in parts
    )
    extra = ""
    if colors and layer.dtype in ("uint8", "uint16"):
        top = max([int(layer.nodata)] + list(colors))
        table = {v: (*rgb, 255) for v, rgb in colors.items()}
        entries = "".join(
            '      <Entry c1="{}" c2="{}" c3="{}" c4="{}" />\n'.format(*table.get(v, (0, 0, 0, 0)))
            for v in range(top + 1)
        )
        extra += f"    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>\n{entries}    </ColorTable>\n"
    if layer.is_class and layer.labels:
        by_value = dict(zip(layer.values, layer.labels))
        top = max(by_value)
        if top < 1024:
            cats = "".join(
                f"      <Category>{html.escape(str(by_value.get(v, '')))}</Category>\n"
                for v in range(top + 1)
            )
            extra += f"    <CategoryNames>\n{cats}    </CategoryNames>\n"
    desc = html.escape(str(layer.attrs.get("long_name", layer.variable)))
    return f"""<VRTDataset rasterXSize="{target.width}" rasterYSize="{target.height}">
  <SRS dataAxisToSRSAxisMapping="2,1">{html.escape(_wkt(target.crs))}</SRS>
  <GeoTransform>{_gt(target.transform)}</GeoTransform>
  <Metadata>
    <MDI key="EFM_PRODUCT">export</MDI>
  </Metadata>
  <VRTRasterBand dataType="{dtype}" band="1">
    <Description>{desc}</Description>
    <NoDataValue>{nodata}</NoDataValue>
{extra}{sources}  </VRTRasterBand>
</VRTDataset>
"""


@dataclasses.dataclass(frozen=True)
class MosaicLayer(export_layer.Layer):
    """An `export_layer.Layer` on an EPSG:4326 grid whose windows are computed by the collection's rule
    from the members' layers (their own `read`: nodata, float handling as a store's export)."""

    members: tuple = dataclasses.field(default=(), compare=False, repr=False)  # (Source, Layer)

    def open_array(self):
        return [m.open_array() for _, m in self.members]

    def read(self, arrays, time_index, w: Window) -> np.ndarray:
        target = zm.Target(
            self.crs,
            self.transform[2],
            self.transform[5],
            self.transform[0],
            -self.transform[4],
            self.width,
            self.height,
        )
        sources = [s for s, _ in self.members]
        layers = [lay for _, lay in self.members]

        def read(i, win):
            lay = layers[i]
            t = None if time_index is None else lay.years.index(self.years[time_index])
            return lay.read(arrays[i], t, win)

        return zm.window_values(target, w, sources, read, self.nodata, self.dtype)


def source_of(cell: Cell, layer: export_layer.Layer) -> zm.Source:
    return zm.Source(
        cell,
        layer.crs,
        tuple(layer.transform),
        layer.width,
        layer.height,
        layer.chunk_rows,
        layer.chunk_cols,
    )


def mosaic_layer(cells_layers: list[tuple[Cell, export_layer.Layer]], target: zm.Target, path: str):
    """The mosaic of members' layers (all of one variable, kind and dtype) on `target`."""
    first = cells_layers[0][1]
    return MosaicLayer(
        **{
            **{f.name: getattr(first, f.name) for f in dataclasses.fields(export_layer.Layer)},
            "path": path,
            "crs": target.crs,
            "transform": target.transform,
            "width": target.width,
            "height": target.height,
            "chunk_rows": MOSAIC_BLOCK,
            "chunk_cols": MOSAIC_BLOCK,
            "offset": (0, 0),
            "skip": frozenset(),
        },
        members=tuple((source_of(c, lay), lay) for c, lay in cells_layers),
    )


def write_zones(
    folder: str,
    cells_layers: list[tuple[Cell, export_layer.Layer]],
    time_index: int | None,
    stems: dict[Cell, str],
    vrt_stem: str,
    target: zm.Target,
    colors,
) -> list[str]:
    """One COG per zone, its warped VRT, and the VRT over all: the paths written, in order."""
    from transforms.core import atomic

    written = []
    parts = []
    for cell, lay in cells_layers:
        cog = f"{stems[cell]}.tif"
        export.write_cog(lay, time_index, join(folder, cog), colors)
        written.append(join(folder, cog))
        block = zm.cell_block(target, cell)
        if block is None:  # the zone's cell has no pixel centre on the grid (a sliver)
            continue
        vrt = f"{stems[cell]}.vrt"
        atomic.write_bytes(join(folder, vrt), warped_vrt(cog, lay, target, block))
        written.append(join(folder, vrt))
        parts.append((vrt, block))
    first = cells_layers[0][1]
    atomic.write_bytes(join(folder, f"{vrt_stem}.vrt"), mosaic_vrt(parts, first, target, colors))
    written.append(join(folder, f"{vrt_stem}.vrt"))
    return written


def join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)


def check_alike(cells_layers: list[tuple[Cell, export_layer.Layer]], flag: str, root: str) -> None:
    """The members of one export must be the same map (variable, kind, dtype, classes)."""
    from transforms.core.errors import InputError

    first_cell, first = cells_layers[0]
    for cell, lay in cells_layers[1:]:
        for what in ("variable", "kind", "dtype", "values", "labels", "timed", "years"):
            if getattr(lay, what) != getattr(first, what):
                raise InputError(
                    flag,
                    f"the collection at {root}: {cell.name}'s store has {what} "
                    f"{getattr(lay, what)!r}, {first_cell.name}'s {getattr(first, what)!r}: "
                    "its stores are not one map",
                )


def mark(folder: str) -> None:
    """Make the output folder recognisable as efm's (kind KIND) before anything is written in it."""
    import json

    from transforms.core import atomic
    from transforms.storage import kinds
    from transforms.storage.store import tool_version

    atomic.write_bytes(
        join(folder, kinds.MARKER_FILE),
        json.dumps({kinds.PRODUCT_ATTR: KIND, "efm_version": tool_version()}),
    )
