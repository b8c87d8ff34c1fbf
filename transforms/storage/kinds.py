"""The kinds of product efm writes, and the marks by which each is recognised as efm's.

    embedding / class-map store  group attr `efm_product` ("embeddings" | "classes" | "change" |
                                 "similarity" | "prediction"); older
                                 stores by their variable plus `efm_version`/`efm_status`
    sample table                 the Parquet schema metadata key b"efm" (transforms.learning.sampling)
    model file                   its sidecar: `format: efm-model/1`, sha256 equal to the file's
    GeoTIFF / PNG (export)       the GeoTIFF tag EFM_PRODUCT / the PNG text chunk efm_product
    sample-data / demo folder    the marker file `.efm-product` in it
    points file (efm label)      the GeoJSON top-level member `efm_product: "points"`

What is at a path is judged by transforms/storage/recognise.py; where a command may write, and
the replacement of an old product, by transforms/storage/outputs.py.
"""

from __future__ import annotations

TABLE_METADATA_KEY = (
    b"efm"  # a sample table's Parquet schema key holding its provenance (efm sample)
)
PRODUCT_ATTR = "efm_product"
STATUS_ATTR = "efm_status"  # == transforms.storage.store.STATUS_ATTR
REMOVING = "removing"  # a store's status while `outputs.remove` deletes it
MARKER_FILE = ".efm-product"  # in the folders efm makes (sample data, demo)
GEOTIFF_TAG = "EFM_PRODUCT"
PNG_KEY = "efm_product"
KINDS = {
    "embeddings": "an efm embedding store",
    "classes": "an efm class-map store",
    "change": "an efm change store",
    "similarity": "an efm similarity store",
    "prediction": "an efm prediction store",
    "table": "an efm sample table",
    "model": "an efm model file",
    "geotiff": "an efm GeoTIFF export",
    "png": "an efm quicklook PNG",
    "sample-data": "an efm sample-data folder",
    "demo": "an efm demo folder",
    "points": "an efm points file",
}
STORE_VARIABLE = {
    "embeddings": "embedding",
    "classes": "class",
    "change": "similarity",
    "similarity": "similarity",
    "prediction": "prediction",
}
RESUMABLE = set(STORE_VARIABLE)
# A collection (transforms/storage/collection.py): a folder of one store per UTM zone and its
# index; its kind names what its stores are.
COLLECTION_INDEX = "collection.json"  # == collection.INDEX
for _kind in STORE_VARIABLE:
    KINDS[f"{_kind}-collection"] = f"an efm collection of {_kind} stores"
    RESUMABLE.add(f"{_kind}-collection")
# `efm export` of a collection (transforms/products/zone_export.py): a folder marked with
# MARKER_FILE holding a COG and a warped VRT per zone and the VRT over all of them.
KINDS["cog-collection"] = "an efm export of a collection (a COG per zone and a VRT)"
COG_COLLECTION_ENTRIES = {
    "utm-[0-9]*[ns].tif": "geotiff",
    "utm-[0-9]*[ns]_[0-9][0-9][0-9][0-9].tif": "geotiff",
    "utm-[0-9]*[ns].vrt": None,
    "utm-[0-9]*[ns]_[0-9][0-9][0-9][0-9].vrt": None,
    "map.vrt": None,
    "map_[0-9][0-9][0-9][0-9].vrt": None,
}

# What each folder product holds (glob patterns of top-level entries -> the product an entry is, if any).
SAMPLE_DATA_ENTRIES = {
    "mirror": "mirror",
    "ground_truth.tif": None,
    "labels.geojson": None,
    "colors.json": None,
    "sample_data.json": None,
    "biomass.tif": None,
    "gedi.geojson": None,
    "refs.geojson": None,
    "change_truth.tif": None,
    "parcels.geojson": None,
}
DEMO_ENTRIES = {
    "sample-data": "sample-data",
    "embeddings.zarr": "embeddings",
    "samples.parquet": None,
    "model.skops": None,
    "model.skops.json": None,
    "classes.zarr": "classes",
    "land_cover_*.tif": None,
    "land_cover_*.png": None,
    "comparison.png": None,
    "demo.log": None,
    "gedi_samples.parquet": None,
    "biomass_model.skops": None,
    "biomass_model.skops.json": None,
    "biomass.zarr": "prediction",
    "similarity.zarr": "similarity",
    "change.zarr": "change",
    "biomass_*.tif": None,
    "biomass_*.png": None,
    "similarity_*.tif": None,
    "similarity_*.png": None,
    "change.tif": None,
    "change.png": None,
    "area.collection": "embeddings-collection",
    "parcels.parquet": None,
}
