"""Validate a Zarr store against the field's conventions: proj:, spatial:, geoemb: (issue 17).

`validate_store(path)` walks the root group and every group and array under it and raises one
AssertionError that names every violation (`<node>: <convention>: <what>`), or returns None.

What is checked, per node (group or array):
- registration: a node that carries `proj:*`, `spatial:*` or `geoemb:*` attributes registers that
  convention in its `zarr_conventions` list (by uuid or name), and the registered entry is the v1
  entry the convention's schema accepts (its `$defs/conventionMetadata`);
- the convention's JSON schema, vendored in tests/schemas/ (README there: source URL + commit):
  geo-proj v1, spatial v1 and geoemb v1, run with `jsonschema` (draft 7 / draft 2020-12 as each
  schema declares);
- proj: the CRS parses (pyproj) from `proj:code`, `proj:wkt2` or `proj:projjson`;
- spatial: `spatial:transform` and `spatial:shape` are present (efm's readers need both; the schema
  makes them optional), the transform is an invertible affine, `spatial:shape` equals the sizes of
  `spatial:dimensions` in every array the node describes (itself, or the >= 2-D arrays of the group),
  `spatial:bbox` (when present) is the grid's extent, and 1-D coordinate arrays named like the
  spatial dimensions hold the pixel centres (`registration` "pixel") or nodes ("node");
- every >= 2-D array with both spatial dimensions is described by proj: and spatial: (on itself or
  an ancestor group), and a CF `grid_mapping` it names exists and agrees with proj:/spatial:
  (`crs_wkt` the same CRS, `GeoTransform` the same transform);
- geoemb:, on the group that holds it (its scope is Group), for every embedding array under it
  (named `embedding`/`embeddings`, dims with `band`): the schema's required fields
  (geoembeddings convention v1, github.com/geo-embeddings/embeddings-zarr-convention README.md
  "Required Fields" and schema.json at 0655212):
    `zarr_conventions` (registering geoemb:), `geoemb:type` ("pixel" | "chip"),
    `geoemb:dimensions` (int >= 1), `geoemb:model` (URL), `geoemb:source_data` (list of URLs,
    >= 1), `geoemb:data_type` (string); `geoemb:chip_layout` too when type is "chip";
    optional `geoemb:quantization` = {method, original_dtype (both required), quantized_dtype,
    scale: {type "scalar", scale, offset} | {type "array", array_name, nodata}, link} and no
    other key; plus, checked against the data: `geoemb:dimensions` is the `band` size,
    `geoemb:data_type` (and `quantized_dtype`) the array's dtype, an integer store names a
    quantization (efm refuses to guess one), and an array scale's `array_name` exists beside
    the embeddings with their dims less `band`.

`allow` takes regular expressions for violations a caller accepts (e.g. `AEF_MOSAIC_DEVIATIONS`,
what the public AEF mosaic itself records against geoemb v1); an allowance that matches nothing
is itself a violation, so that the list cannot go stale.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import jsonschema
import numpy as np
import pyproj
import referencing
import zarr

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
PROJJSON_URL = "https://proj.org/schemas/v0.7/projjson.schema.json"
EMBEDDING_NAMES = ("embedding", "embeddings")

# prefix -> (uuid, schema file); names as the v1 registrations spell them
CONVENTIONS = {
    "proj:": ("f17cb550-5864-4468-aeb7-f3180cfb622f", "proj.schema.json"),
    "spatial:": ("689b58e2-cf7b-45e0-9fff-9cfc0883d6b4", "spatial.schema.json"),
    "geoemb:": ("61c12cc5-0e28-4056-999a-480cf3fb7e4c", "geoemb.schema.json"),
}

# What the public AEF mosaic (geospatial-jeff/aef-mosaic src/io/zarr_writer.rs, as
# tests/helpers/field_stores.aef_mosaic writes it) records against geoemb v1: a draft-era
# registration entry (description and spec_url of the `add-convention` branch), a single
# `geoemb:source_data` URL where v1 wants a list, and `formula`/`valid_range`/`nodata` inside
# `geoemb:quantization`, which v1 closes (additionalProperties: false).
AEF_MOSAIC_DEVIATIONS = (
    r"^/: geoemb: zarr_conventions entry description: ",
    r"^/: geoemb: zarr_conventions entry spec_url: ",
    r"^/: geoemb: schema: attributes/geoemb:source_data: .* is not of type 'array'",
    r"^/: geoemb: schema: attributes/geoemb:quantization: Additional properties .*'formula'",
)


def _schema(prefix: str):
    text = (SCHEMAS / CONVENTIONS[prefix][1]).read_text()
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    spec = (
        referencing.jsonschema.DRAFT202012
        if cls is jsonschema.Draft202012Validator
        else referencing.jsonschema.DRAFT7
    )
    # proj:projjson's schema lives on proj.org: not fetched (tests are offline); pyproj parses it.
    registry = referencing.Registry().with_resource(PROJJSON_URL, spec.create_resource({}))
    return cls(schema, registry=registry), schema


def _dims(array) -> tuple[str, ...]:
    if array.metadata.zarr_format == 3:
        return tuple(array.metadata.dimension_names or ())
    return tuple(array.attrs.get("_ARRAY_DIMENSIONS", ()))


def _registered(attrs: dict, prefix: str) -> list[dict]:
    uuid = CONVENTIONS[prefix][0]
    entries = attrs.get("zarr_conventions")
    if not isinstance(entries, list):
        return []
    return [
        e
        for e in entries
        if isinstance(e, dict) and (e.get("uuid") == uuid or e.get("name") == prefix)
    ]


def _path(error) -> str:
    return "/".join(str(p) for p in error.absolute_path)


def _crs(attrs: dict):
    if "proj:code" in attrs:
        return pyproj.CRS.from_user_input(attrs["proj:code"])
    if "proj:wkt2" in attrs:
        return pyproj.CRS.from_wkt(attrs["proj:wkt2"])
    if "proj:projjson" in attrs:
        return pyproj.CRS.from_json_dict(attrs["proj:projjson"])
    return None


def _close(a, b, tol) -> bool:
    return np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-12, atol=tol)


class _Walk:
    def __init__(self, root):
        self.root = root
        self.violations: list[str] = []
        self.nodes = [("/", root)] + [
            ("/" + name, node) for name, node in root.members(max_depth=None)
        ]

    def add(self, node: str, convention: str, message: str) -> None:
        self.violations.append(f"{node}: {convention} {message}")

    # -- registration + schema ------------------------------------------------------------------
    def conventions(self, name: str, node) -> None:
        attrs = dict(node.attrs)
        kind = "array" if isinstance(node, zarr.Array) else "group"
        for prefix in CONVENTIONS:
            used = sorted(k for k in attrs if k.startswith(prefix))
            entries = _registered(attrs, prefix)
            if not used and not entries:
                continue
            if used and not entries:
                self.add(
                    name,
                    prefix,
                    f"attributes {used} are used but zarr_conventions does not register {prefix} "
                    f"(uuid {CONVENTIONS[prefix][0]})",
                )
            validator, schema = _schema(prefix)
            entry_validator = jsonschema.validators.validator_for(schema)(
                schema["$defs"]["conventionMetadata"]
            )
            for entry in entries:
                for error in sorted(entry_validator.iter_errors(entry), key=str):
                    key = _path(error) or "(entry)"
                    self.add(
                        name, prefix, f"zarr_conventions entry {key}: {error.message} (got {entry})"
                    )
            document = {
                "zarr_format": node.metadata.zarr_format,
                "node_type": kind,
                "attributes": attrs,
            }
            for error in sorted(
                validator.iter_errors(document), key=lambda e: (_path(e), e.message)
            ):
                if _path(error) == "attributes/zarr_conventions" and error.validator == "contains":
                    if entries:  # the registered entry's own errors are reported above
                        continue
                    if not used:
                        continue
                self.add(name, prefix, f"schema: {_path(error) or '(node)'}: {error.message}")
            if prefix == "proj:" and used:
                try:
                    if _crs(attrs) is None:
                        self.add(name, prefix, "no proj:code, proj:wkt2 or proj:projjson")
                except pyproj.exceptions.CRSError as e:
                    self.add(name, prefix, f"the CRS does not parse: {e}")

    # -- effective attributes of an array: its ancestors' overridden by its own --------------------
    def effective(self, name: str) -> tuple[dict, dict[str, str]]:
        merged, source = {}, {}
        parts = name.strip("/").split("/")
        for depth in range(len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            node = self.root if depth == 0 else self.root[path.lstrip("/")]
            for k, v in node.attrs.items():
                merged[k] = v
                source[k] = path
        return merged, source

    def parent(self, name: str):
        parent = name.rsplit("/", 1)[0]
        return self.root if parent in ("", "/") else self.root[parent.lstrip("/")]

    # -- spatial: -----------------------------------------------------------------------------
    def spatial(self, name: str, node) -> None:
        attrs = dict(node.attrs)
        if not any(k.startswith("spatial:") for k in attrs):
            return
        dims = attrs.get("spatial:dimensions")
        if not (isinstance(dims, list) and len(dims) == 2):
            return  # the schema has said so
        transform, shape = attrs.get("spatial:transform"), attrs.get("spatial:shape")
        for key, value in (("spatial:transform", transform), ("spatial:shape", shape)):
            if value is None:
                self.add(name, "spatial:", f"{key} is missing (efm's readers need the grid)")
        if isinstance(node, zarr.Array):
            described, group = [(name, node)], self.parent(name)
        else:
            group = node
            described = [
                (f"{name.rstrip('/')}/{n}", a)
                for n, a in node.arrays()
                if len(_dims(a)) >= 2 and set(dims) <= set(_dims(a))
            ]
            if not described:
                self.add(name, "spatial:", f"no array in this group has the dimensions {dims}")
        for array_name, array in described:
            adims = _dims(array)
            if not set(dims) <= set(adims):
                self.add(array_name, "spatial:", f"dimensions {dims} are not among {list(adims)}")
                continue
            size = [array.shape[adims.index(d)] for d in dims]
            if isinstance(shape, list) and list(shape) != size:
                self.add(
                    name,
                    "spatial:",
                    f"spatial:shape {shape} but {array_name} is {size} along {dims}",
                )
        if not (isinstance(transform, list) and len(transform) == 6):
            return
        if attrs.get("spatial:transform_type", "affine") != "affine":
            self.add(name, "spatial:", "transform_type is not 'affine'")
            return
        a, b, c, d, e, f = (float(v) for v in transform)
        if a * e - b * d == 0:
            self.add(name, "spatial:", f"spatial:transform {transform} is not invertible")
            return
        if not (isinstance(shape, list) and len(shape) == 2):
            return
        height, width = shape
        node_reg = attrs.get("spatial:registration", "pixel") == "node"
        last_col, last_row = (width - 1, height - 1) if node_reg else (width, height)
        corners = [(cc, rr) for cc in (0, last_col) for rr in (0, last_row)]
        xs = [a * cc + b * rr + c for cc, rr in corners]
        ys = [d * cc + e * rr + f for cc, rr in corners]
        tol = 1e-6 * max(abs(a), abs(b), abs(d), abs(e))
        bbox = attrs.get("spatial:bbox")
        if bbox is not None and not _close(bbox, [min(xs), min(ys), max(xs), max(ys)], tol):
            self.add(
                name,
                "spatial:",
                f"spatial:bbox {bbox} is not the grid's extent "
                f"{[min(xs), min(ys), max(xs), max(ys)]} (transform {transform}, shape {shape})",
            )
        half = 0.0 if node_reg else 0.5
        for dim, along, n in ((dims[1], (a, c, b), width), (dims[0], (e, f, d), height)):
            if dim not in group or not isinstance(group[dim], zarr.Array):
                continue
            coord = group[dim]
            if coord.ndim != 1:
                continue
            step, origin, cross = along
            if cross != 0:
                continue  # a rotated grid has no 1-D coordinates to compare with
            if coord.shape[0] != n:
                self.add(name, "spatial:", f"coordinate {dim} has {coord.shape[0]} values, not {n}")
                continue
            want = origin + (np.arange(n) + half) * step
            if not _close(coord[:], want, tol):
                self.add(
                    name,
                    "spatial:",
                    f"coordinate {dim} does not hold the {'nodes' if node_reg else 'pixel centres'}"
                    f" of spatial:transform (first {float(coord[0])}, want {float(want[0])})",
                )

    # -- every gridded array is described; CF grid_mapping agrees ------------------------------
    def gridded(self, name: str, array) -> None:
        adims = _dims(array)
        merged, _ = self.effective(name)
        dims = merged.get("spatial:dimensions")
        if not (len(adims) >= 2 and ("y" in adims and "x" in adims or isinstance(dims, list))):
            return
        if isinstance(dims, list) and not set(dims) <= set(adims):
            return  # not a gridded array (e.g. a 2-D table)
        if not any(k.startswith("spatial:") for k in merged):
            self.add(name, "spatial:", "this gridded array is described by no spatial: attributes")
        if not any(k.startswith("proj:") for k in merged):
            self.add(name, "proj:", "this gridded array has no proj: CRS (on itself or a parent)")
        mapping = array.attrs.get("grid_mapping")
        if mapping is None:
            return
        group = self.parent(name)
        if mapping not in group:
            self.add(name, "CF", f"grid_mapping {mapping!r} names no variable beside the array")
            return
        gm = dict(group[mapping].attrs)
        wkt = gm.get("crs_wkt") or gm.get("spatial_ref")
        try:
            proj_crs = _crs(merged)
        except pyproj.exceptions.CRSError:
            proj_crs = None
        if wkt is None:
            self.add(name, "CF", f"grid_mapping {mapping!r} has no crs_wkt")
        elif proj_crs is not None and not pyproj.CRS.from_wkt(wkt).equals(proj_crs):
            self.add(name, "CF", f"grid_mapping {mapping!r} crs_wkt is not the proj: CRS")
        transform = merged.get("spatial:transform")
        if "GeoTransform" in gm and isinstance(transform, list) and len(transform) == 6:
            gdal = [float(v) for v in str(gm["GeoTransform"]).split()]
            a, b, c, d, e, f = transform
            if not _close(gdal, [c, a, b, f, d, e], 1e-9 * max(abs(a), abs(e))):
                self.add(
                    name,
                    "CF",
                    f"grid_mapping {mapping!r} GeoTransform {gm['GeoTransform']!r} is not "
                    f"spatial:transform {transform}",
                )

    # -- geoemb: against the data --------------------------------------------------------------
    def geoemb(self, name: str, node) -> None:
        attrs = dict(node.attrs)
        if isinstance(node, zarr.Array) or not any(k.startswith("geoemb:") for k in attrs):
            return
        prefix = name.rstrip("/") + "/"
        found = [
            (n, a)
            for n, a in self.nodes
            if isinstance(a, zarr.Array)
            and n.startswith(prefix)
            and n.rsplit("/", 1)[-1] in EMBEDDING_NAMES
        ]
        if not found:
            self.add(name, "geoemb:", "no `embedding`/`embeddings` array under this group")
        quant = attrs.get("geoemb:quantization")
        for array_name, array in found:
            adims = _dims(array)
            if "band" not in adims:
                self.add(array_name, "geoemb:", f"dimensions {list(adims)} have no `band`")
            elif attrs.get("geoemb:dimensions") != array.shape[adims.index("band")]:
                self.add(
                    name,
                    "geoemb:",
                    f"geoemb:dimensions {attrs.get('geoemb:dimensions')!r} but {array_name} has "
                    f"{array.shape[adims.index('band')]} bands",
                )
            dtype = str(array.dtype)
            if attrs.get("geoemb:data_type") != dtype:
                self.add(
                    name,
                    "geoemb:",
                    f"geoemb:data_type {attrs.get('geoemb:data_type')!r} but {array_name} is {dtype}",
                )
            if array.dtype.kind in "iu" and not isinstance(quant, dict):
                self.add(name, "geoemb:", f"{array_name} is {dtype} but no geoemb:quantization")
            if not isinstance(quant, dict):
                continue
            if "quantized_dtype" in quant and quant["quantized_dtype"] != dtype:
                self.add(
                    name,
                    "geoemb:",
                    f"quantization.quantized_dtype {quant['quantized_dtype']!r} but {array_name} "
                    f"is {dtype}",
                )
            scale = quant.get("scale")
            if isinstance(scale, dict) and scale.get("type") == "array":
                group = self.parent(array_name)
                sname = scale.get("array_name")
                want = [d for d in adims if d != "band"]
                if sname not in group or not isinstance(group[sname], zarr.Array):
                    self.add(name, "geoemb:", f"scale array {sname!r} is not beside {array_name}")
                elif list(_dims(group[sname])) != want:
                    self.add(
                        name,
                        "geoemb:",
                        f"scale array {sname!r} has dims {list(_dims(group[sname]))}, want {want}",
                    )


def violations(path) -> list[str]:
    """Every violation in the store at `path` (a local path or a URL zarr can open)."""
    root = zarr.open_group(str(path), mode="r")
    walk = _Walk(root)
    for name, node in walk.nodes:
        walk.conventions(name, node)
        walk.spatial(name, node)
        walk.geoemb(name, node)
        if isinstance(node, zarr.Array):
            walk.gridded(name, node)
    if not any(k.startswith("geoemb:") for _, n in walk.nodes for k in n.attrs) and any(
        isinstance(n, zarr.Array) and name.rsplit("/", 1)[-1] in EMBEDDING_NAMES
        for name, n in walk.nodes
    ):
        walk.add("/", "geoemb:", "the store holds embeddings but no group carries geoemb:")
    return walk.violations


def validate_store(path, *, allow: Iterable[str] = ()) -> None:
    """Raise AssertionError naming every violation (see the module's docstring); None if none."""
    found = violations(path)
    patterns = [re.compile(p) for p in allow]
    kept = [v for v in found if not any(p.search(v) for p in patterns)]
    stale = [p.pattern for p in patterns if not any(p.search(v) for v in found)]
    kept += [f"allowance {p!r} matches no violation (stale)" for p in stale]
    if kept:
        raise AssertionError(
            f"{path}: {len(kept)} convention violation(s):\n" + "\n".join(f"  {v}" for v in kept)
        )


# The geoemb: registration entry that geoemb v1 accepts (its README's "Convention Registration").
GEOEMB_V1 = {
    "schema_url": "https://raw.githubusercontent.com/geo-embeddings/embeddings-zarr-convention/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/geo-embeddings/embeddings-zarr-convention/blob/v1/README.md",
    "uuid": CONVENTIONS["geoemb:"][0],
    "name": "geoemb:",
    "description": "Geoembeddings convention for geospatial embedding arrays with model provenance",
}


def efm_v3_store(
    path,
    *,
    width: int = 200,
    height: int = 300,
    years=(2024, 2025),
    bands: int = 64,
    crs: str = "EPSG:32610",
    west: float = 500000.0,
    north: float = 4200000.0,
    res: float = 10.0,
    shard: int = 1024,
    inner: int = 256,
    compressors="blosc-zstd",
    seed: int = 0,
) -> np.ndarray:
    """A store in the layout efm's v3 writer is to write (issue 17), passing `validate_store`
    and read right by GDAL 3.13 and rioxarray; returns the int8 codes written.

    Group attrs: proj:code, spatial:* (pixel registration), geoemb:* v1 (source_data a list,
    quantization without keys v1 does not define), zarr_conventions [proj:, spatial:, geoemb: v1].
    `embedding` int8 (time, band, y, x), fill -128, shards (1, bands, shard, shard) of inner
    chunks (1, bands, inner, inner), Blosc-Zstd, attr grid_mapping = "spatial_ref"; x/y float64
    pixel centres (CF axis attrs), time int32 years, band strings, `spatial_ref` int32 scalar with
    crs_wkt, spatial_ref and GeoTransform (GDAL order).
    """
    from zarr.codecs import BloscCodec, ZstdCodec

    from tests.helpers.field_stores import AEF_MODEL, PROJ, SPATIAL

    codec = {
        "blosc-zstd": BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
        "zstd": ZstdCodec(level=3),
        "none": None,
    }[compressors]
    crs_obj = pyproj.CRS.from_user_input(crs)
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.attrs.update(
        {
            "proj:code": crs,
            "spatial:dimensions": ["y", "x"],
            "spatial:transform": [res, 0.0, west, 0.0, -res, north],
            "spatial:transform_type": "affine",
            "spatial:shape": [height, width],
            "spatial:bbox": [west, north - height * res, west + width * res, north],
            "spatial:registration": "pixel",
            "geoemb:type": "pixel",
            "geoemb:dimensions": bands,
            "geoemb:model": AEF_MODEL,
            "geoemb:source_data": [AEF_MODEL],
            "geoemb:data_type": "int8",
            "geoemb:gsd": res,
            "geoemb:quantization": {
                "method": "signed_square",
                "original_dtype": "float32",
                "quantized_dtype": "int8",
            },
            "zarr_conventions": [PROJ, SPATIAL, GEOEMB_V1],
        }
    )
    embedding = root.create_array(
        "embedding",
        shape=(len(years), bands, height, width),
        shards=(1, bands, shard, shard),
        chunks=(1, bands, inner, inner),
        dtype="int8",
        fill_value=-128,
        compressors=codec,
        dimension_names=["time", "band", "y", "x"],
    )
    codes = (
        np.random.default_rng(seed)
        .integers(-128, 128, size=embedding.shape, dtype=np.int16)
        .astype(np.int8)
    )
    embedding[:] = codes
    embedding.attrs["grid_mapping"] = "spatial_ref"
    for name, n, values, attrs in (
        ("x", width, west + (np.arange(width) + 0.5) * res, {"axis": "X"}),
        ("y", height, north - (np.arange(height) + 0.5) * res, {"axis": "Y"}),
    ):
        coord = root.create_array(
            name, shape=(n,), chunks=(n,), dtype="float64", fill_value=0.0, dimension_names=[name]
        )
        coord[:] = values
        unit = "metre" if crs_obj.is_projected else "degree"
        standard = ("projection_" if crs_obj.is_projected else "") + (
            f"{name}_coordinate"
            if crs_obj.is_projected
            else {"x": "longitude", "y": "latitude"}[name]
        )
        coord.attrs.update({**attrs, "standard_name": standard, "units": unit})
    time = root.create_array(
        "time", shape=(len(years),), dtype="int32", fill_value=0, dimension_names=["time"]
    )
    time[:] = np.asarray(years, dtype=np.int32)
    time.attrs.update({"axis": "T", "long_name": "year"})
    band = root.create_array(
        "band",
        shape=(bands,),
        dtype=np.dtypes.StringDType(),
        fill_value="",
        dimension_names=["band"],
    )
    band[:] = np.array([f"A{i:02d}" for i in range(bands)], dtype=np.dtypes.StringDType())
    ref = root.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0)
    wkt = crs_obj.to_wkt()
    ref.attrs.update(
        {
            "crs_wkt": wkt,
            "spatial_ref": wkt,
            "GeoTransform": f"{west!r} {res!r} 0.0 {north!r} 0.0 {-res!r}",
            **crs_obj.to_cf(),
        }
    )
    return codes
