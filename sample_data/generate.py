"""Realistic sample data in the public COG mirror's layout: pure generator functions.

What `efm make-sample-data` (and `efm demo`) writes under one folder:

    mirror/aef_index.parquet|.gpkg|.csv    the index, with the public index's columns
    mirror/<year>/<zone>/<name>.tiff       int8 COGs, 64 bands A00..A63, nodata -128,
                                           in two adjacent UTM zones, for two years
    ground_truth.tif                       the land-cover classes (uint8, 255 = none)
                                           on the reference grid (zone A, 10 m)
    labels.geojson                         labelled points (lon/lat), a few dozen a class
    biomass.tif                            synthetic biomass, Mg/ha (float32), same grid
    gedi.geojson                           GEDI-like points with `agbd` from biomass.tif
    refs.geojson                           the forest labelled points (for similarity)
    change_truth.tif                       1 where land cover changed in the last year
    colors.json                            {label: colour} (for `efm export --tuning colors=`)
    sample_data.json                       what was generated: grid, classes, files

How the data is made, so that it looks and behaves like the real thing:

* land cover: each class has a random field summed over several spatial scales
  (smoothed noise, 40 m to 1.6 km), with per-class scale weights (water and forest form
  large bodies, built-up and cropland smaller patches); the class of a pixel is the
  argmax of the fields: irregular, nested shapes at several scales;
* embedding: each class is a direction on the unit sphere in 64-d (distinct, but not
  orthogonal: they share a common component), moved within a class by a few spatially
  smooth "texture" fields, plus per-pixel noise, and drifting a little from one year to
  the next; each vector is normalised to unit length, then quantised with the mirror's
  formula (code = round(sign(x) sqrt(|x|) 127.5));
* no-data: irregular blobs that differ by year (as gaps in the real data do);
* two UTM zones: the reference grid is in zone A; each zone's files hold the pixels
  on its side of the zone boundary (zone B a little past it), zone B's on its own
  10 m grid, with classes and textures taken from the nearest reference pixel;
* labelled points: clustered in the interior of a few patches per class, the way a
  person digitises training points, never in no-data.

The parts: `sample_world` (reference grid, land cover, no-data), `sample_embedding`
(directions, texture, noise, drift, quantisation), `sample_mirror` (the COGs and their
index), `sample_truth` (ground truth, labelled points, scoring). This module holds the
spec and `generate`, which writes everything.
"""

from __future__ import annotations

import dataclasses
import json
import os

from sample_data.fields import CHANGE_NODATA, biomass_field, gedi_points, write_gedi, write_raster
from sample_data.mirror import write_index, write_mirror
from sample_data.truth import labelled_points, write_ground_truth, write_parcels, write_points
from sample_data.world import CLASS_COLOURS, CLASS_NAMES, inner_bbox, make_world, seeded
from transforms.core import atomic

MIRROR_DIR = "mirror"
REFERENCE_CLASS = "forest"  # refs.geojson: the labelled points of this class


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """What to generate. Sizes are in 10 m pixels of the reference grid."""

    rows: int = 1024
    cols: int = 1280
    tile_size: int = 512  # side of each COG file (the public mirror's: 8192)
    years: tuple[int, ...] = (2022, 2023)
    zone_a: str = "10N"  # the reference grid's zone; zone B is the next one east
    boundary_fraction: float = 0.6  # where the zone boundary crosses the area, from the west
    centre_lat: float = 39.0
    n_classes: int = 8
    points_per_class: int = 36
    gedi_points: int = 400  # GEDI-like footprints with `agbd`
    noise: float = 0.15  # per-band std of per-pixel noise (|noise| ~ 1.2 before normalising)
    noise_persistence: float = 0.8  # share of the noise variance a pixel keeps from year to year
    texture: float = 0.38  # amplitude of the smooth within-class variation
    drift: float = 0.12  # year-to-year drift of each class direction
    class_similarity: float = 0.65  # cosine shared by every pair of class directions
    mixing_px: float = 0.8  # class edges blur over about this many pixels (mixed pixels)
    nodata_fraction: float = 0.03  # of the area, per year
    zone_b_overlap_deg: float = 0.004  # zone B's files reach this far west of the boundary
    bottom_up: bool = True  # rows bottom-up (positive y resolution), like the public mirror's files
    block_size: int = 1024  # the COGs' blocks (the public mirror's: 1024; a multiple of 16)
    seed: int = 7

    def __post_init__(self):
        if not 2 <= self.n_classes <= len(CLASS_NAMES):
            raise ValueError(f"n_classes must be in 2..{len(CLASS_NAMES)}")
        if self.rows < 64 or self.cols < 64 or self.tile_size < 64:
            raise ValueError("rows, cols and tile_size must be at least 64 px")
        if self.block_size < 16 or self.block_size % 16:
            raise ValueError("block_size must be a positive multiple of 16 px")

    @property
    def zone_b(self) -> str:
        number, hemisphere = int(self.zone_a[:-1]), self.zone_a[-1].upper()
        return f"{number % 60 + 1}{hemisphere}"

    @property
    def boundary_lon(self) -> float:
        return -180.0 + 6.0 * int(self.zone_a[:-1])


SMALL = dict(rows=256, cols=320, tile_size=128, points_per_class=24, gedi_points=250)


@dataclasses.dataclass
class SampleData:
    output: str
    mirror: str
    ground_truth: str
    points: str
    colors: str
    manifest: str
    index: dict[str, str]
    files: list[str]
    bbox: tuple[float, float, float, float]  # W,S,E,N of the reference grid (lon/lat)
    crs: str
    n_points: int
    spec: SampleSpec


def write_fields(world, points: list[dict], output: str) -> dict:
    """biomass.tif, gedi.geojson, refs.geojson and (with two years or more) change_truth.tif."""
    import numpy as np

    spec = world.spec
    field = biomass_field(world)
    write_raster(
        world,
        field,
        os.path.join(output, "biomass.tif"),
        "synthetic above-ground biomass",
        units="Mg/ha",
    )
    gedi = gedi_points(world, field, spec.gedi_points, seeded(spec, "gedi"))
    write_gedi(gedi, os.path.join(output, "gedi.geojson"))
    refs = [p for p in points if p["label"] == REFERENCE_CLASS]
    write_points(refs, os.path.join(output, "refs.geojson"))
    parcels = write_parcels(world, os.path.join(output, "parcels.geojson"), inner_bbox(world))
    fields = {
        "biomass": "biomass.tif",
        "gedi": "gedi.geojson",
        "gedi_points": len(gedi),
        "refs": "refs.geojson",
        "reference_class": REFERENCE_CLASS,
        "ref_points": len(refs),
        "parcels": "parcels.geojson",
        "parcel_count": parcels,
    }
    if world.later_classes is not None:
        truth = (world.later_classes != world.classes).astype(np.uint8)
        truth[world.nodata[spec.years[0]] | world.nodata[spec.years[-1]]] = CHANGE_NODATA
        write_raster(
            world,
            truth,
            os.path.join(output, "change_truth.tif"),
            f"land cover changed between {spec.years[0]} and {spec.years[-1]} (1) or not (0)",
            nodata=CHANGE_NODATA,
        )
        fields["change_truth"] = "change_truth.tif"
    return fields


def generate(output: str, spec: SampleSpec = SampleSpec()) -> SampleData:
    """Write the mirror, its index, the ground truth and the labelled points under `output`."""
    os.makedirs(output, exist_ok=True)
    world = make_world(spec)
    mirror = os.path.join(output, MIRROR_DIR)
    rows = write_mirror(world, mirror)
    index = write_index(rows, mirror)
    ground_truth = os.path.join(output, "ground_truth.tif")
    write_ground_truth(world, ground_truth)
    points = labelled_points(world, seeded(spec, "points"))
    points_path = os.path.join(output, "labels.geojson")
    write_points(points, points_path)
    fields = write_fields(world, points, output)
    colors = os.path.join(output, "colors.json")
    atomic.write_bytes(
        colors, json.dumps(dict(zip(CLASS_NAMES[: spec.n_classes], CLASS_COLOURS)), indent=1)
    )
    bbox = inner_bbox(world)
    manifest = os.path.join(output, "sample_data.json")
    atomic.write_bytes(
        manifest,
        json.dumps(
            {
                "spec": dataclasses.asdict(spec),
                "crs": world.crs,
                "transform": list(world.transform)[:6],
                "bbox": bbox,
                "zones": [spec.zone_a, spec.zone_b],
                "classes": list(CLASS_NAMES[: spec.n_classes]),
                "colours": list(CLASS_COLOURS[: spec.n_classes]),
                "files": [r["path"] for r in rows],
                "points": len(points),
                "fields": fields,
            },
            indent=1,
        ),
    )
    return SampleData(
        output,
        mirror,
        ground_truth,
        points_path,
        colors,
        manifest,
        index,
        [r["path"] for r in rows],
        bbox,
        world.crs,
        len(points),
        spec,
    )


def read(output: str) -> SampleData:
    """The sample data `generate` wrote under `output`, from its manifest."""
    with open(os.path.join(output, "sample_data.json")) as f:
        manifest = json.load(f)
    return SampleData(
        output=output,
        mirror=os.path.join(output, MIRROR_DIR),
        ground_truth=os.path.join(output, "ground_truth.tif"),
        points=os.path.join(output, "labels.geojson"),
        colors=os.path.join(output, "colors.json"),
        manifest=os.path.join(output, "sample_data.json"),
        index={},
        files=manifest["files"],
        bbox=tuple(manifest["bbox"]),
        crs=manifest["crs"],
        n_points=manifest["points"],
        spec=SampleSpec(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in manifest["spec"].items()}
        ),
    )
