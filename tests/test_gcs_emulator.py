"""The GCS emulator fixture really serves gs:// through gcsfs, and Zarr through it."""

import numpy as np
import xarray as xr


def test_gcsfs_round_trip(gcs, gcs_bucket):
    import fsspec

    with fsspec.open(f"{gcs_bucket}/a/b.txt", "wb") as f:
        f.write(b"hello")
    assert fsspec.open(f"{gcs_bucket}/a/b.txt", "rb").open().read() == b"hello"
    assert gcs.fs.ls(gcs_bucket.removeprefix("gs://") + "/a") == [
        gcs_bucket.removeprefix("gs://") + "/a/b.txt"
    ]


def test_zarr_on_gcs(gcs_bucket):
    ds = xr.Dataset({"v": (("y", "x"), np.arange(12.0).reshape(3, 4))})
    ds.to_zarr(f"{gcs_bucket}/t.zarr", zarr_format=2, consolidated=True)
    back = xr.open_zarr(f"{gcs_bucket}/t.zarr", zarr_format=2, consolidated=True).load()
    xr.testing.assert_identical(ds, back)
