"""efm zonal / efm.zonal: each polygon's statistics equal a direct computation over the whole
array with rasterio.features.geometry_mask (one polygon at a time), whatever the chunks."""

from __future__ import annotations

import geopandas
import numpy as np
import pandas as pd
import pytest
import shapely

import efm
from pipelines import cli
from pipelines import zonal as zonal_cli
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store
from tests.helpers.zonal_fields import MEDIAN, STD, box, check, expected, fields, xy
from transforms.learning import sample_table


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    # 300 x 260 px of 10 m, chunks of 128; 2022's first chunk is all no data; a hole across the
    # corner of the first four chunks (rows 116..136, cols 121..142) in both years
    return make_store(str(tmp_path_factory.mktemp("zonal") / "s.zarr"), seed=3)


def run(*argv):
    return zonal_cli.run([*map(str, argv), *FNAPI])


def test_every_case_matches_geometry_mask(s, tmp_path, capsys):
    frame = fields(s)
    frame.to_file(tmp_path / "fields.gpkg")
    out = tmp_path / "fields.parquet"
    argv = ["--embeddings", s.path, "--polygons", tmp_path / "fields.gpkg", "--output", out]
    assert run(*argv, "--stat", "mean,std,median,count") == 0
    table = pd.read_parquet(out)
    want = expected(s, frame.geometry)
    check(table, want)
    # the polygon's columns ride along; the cases are what they claim to be
    by = table.set_index(["name", "year"])["pixel_count"]
    assert by["smaller_than_a_pixel", 2021] == 0 and by["outside", 2022] == 0
    assert by["inside_the_hole", 2021] == 0 and by["inside_the_hole", 2022] == 0
    assert by["first_chunk_no_data_2022", 2022] == 0 < by["first_chunk_no_data_2022", 2021]
    assert table.loc[table["pixel_count"] == 0, list(BANDS) + STD + MEDIAN].isna().all().all()
    assert by["crosses_with_hole", 2021] > 0 and by["multipolygon", 2021] > 0
    assert list(table.columns[:5]) == ["polygon_id", "name", "crop", "year", "pixel_count"]
    meta = sample_table.read_table_metadata(str(out))
    assert meta["pixel_rule"] == "centre" and meta["bands"] == list(BANDS)
    assert "rows without a pixel" in capsys.readouterr().out
    assert not (tmp_path / "fields.parquet.parts").exists()


def test_all_touched_and_lonlat_polygons_over_a_utm_store(s, tmp_path):
    frame = fields(s, crs="EPSG:4326")  # the pipeline reprojects them to the store's UTM zone
    frame.to_file(tmp_path / "fields.geojson")
    out = tmp_path / "t.parquet"
    argv = ["--embeddings", s.path, "--polygons", tmp_path / "fields.geojson", "--output", out]
    assert run(*argv, "--all-touched", "--stat", "mean,std", "--years", "2022") == 0
    table = pd.read_parquet(out)
    want = expected(s, fields(s).geometry, all_touched=True)
    check(table, want[want["year"] == 2022], stats=("mean", "std"))
    tiny = table.set_index("name").loc["smaller_than_a_pixel", "pixel_count"]
    assert tiny >= 1  # touched, though no centre is inside


def test_multi_processing_and_id_column(s, tmp_path):
    frame = fields(s)
    frame["field"] = [f"F{i:03d}" for i in range(len(frame))]
    frame.to_parquet(tmp_path / "fields.parquet")
    out = tmp_path / "t.parquet"
    code = zonal_cli.run(
        [
            "--embeddings",
            s.path,
            "--polygons",
            str(tmp_path / "fields.parquet"),
            "--output",
            str(out),
            "--id-column",
            "field",
            "--stat",
            "median",
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ]
    )
    assert code == 0
    table = pd.read_parquet(out)
    assert table.columns[0] == "field"
    table["polygon_id"] = table["field"].str[1:].astype(int)
    check(table, expected(s, frame.geometry), stats=("median",))


def test_api_equals_cli(s, tmp_path):
    frame = fields(s)
    frame.to_file(tmp_path / "fields.gpkg")
    out = tmp_path / "t.parquet"
    argv = ["--embeddings", s.path, "--polygons", tmp_path / "fields.gpkg", "--output", out]
    assert run(*argv, "--stat", "mean,std") == 0
    api = efm.zonal(efm.open_embeddings(s.path), frame, stats=["mean", "std"])
    cli_table = pd.read_parquet(out)
    pd.testing.assert_frame_equal(api, cli_table, check_dtype=False)
    assert api.attrs["efm"]["stats"] == ["mean", "std"]
    also = efm.zonal(s.path, str(tmp_path / "fields.gpkg"), stats="mean", years=[2021])
    pd.testing.assert_frame_equal(
        also.reset_index(drop=True),
        cli_table[cli_table["year"] == 2021].drop(columns=STD).reset_index(drop=True),
        check_dtype=False,
    )


def test_train_on_fields_then_a_class_per_polygon(s, tmp_path):
    """Fields inside the blocks of one class (2021's pattern): train on their mean embedding,
    then `efm predict --polygons` gives each field its class."""
    rows, cols = np.mgrid[0:8, 0:8]
    polys, crops = [], []
    for r, c in zip(rows.ravel(), cols.ravel()):
        r0, c0 = 37 * r + 10, 29 * c + 8  # inside the block (37 x 29 px) of one class
        if r0 + 12 > s.grid.height or c0 + 12 > s.grid.width:
            continue
        polys.append(box(s, c0 + 0.2, r0 + 0.3, c0 + 11.6, r0 + 14.4))
        crops.append(f"crop{(r + c * 3) % 4}")  # store_factory.class_pattern, year index 0
    frame = geopandas.GeoDataFrame({"crop": crops}, geometry=polys, crs=s.grid.crs)
    frame.to_file(tmp_path / "fields.gpkg")
    table, model, classes = tmp_path / "t.parquet", tmp_path / "m.skops", tmp_path / "c.parquet"
    base = ["--embeddings", s.path, "--polygons", tmp_path / "fields.gpkg", "--years", "2021"]
    assert run(*base, "--output", table) == 0
    assert (
        cli.main(
            ["train", "--samples", str(table), "--label-column", "crop"]
            + ["--classifier", "knn", "--param", "n_neighbors=1", "--tuning", "folds=2"]
            + ["--output", str(model)]
        )
        == 0
    )
    argv = [*map(str, base), "--model", str(model), "--output", str(classes), *FNAPI]
    assert cli.main(["predict", *argv]) == 0
    got = pd.read_parquet(classes)
    have = got["pixel_count"] > 0
    assert have.sum() > 30 and (got.loc[have, "class"] == got.loc[have, "crop"]).all()
    assert "A00" not in got.columns


def write(frame, path):
    frame.to_file(path) if str(path).endswith(".gpkg") else frame.to_parquet(path)
    return path


@pytest.mark.parametrize(
    "case, flag, message",
    [
        ("no_crs", "--polygons", "has no CRS"),
        ("invalid", "--polygons", "2 of 3 geometries"),
        ("empty", "--polygons", "1 of 3 geometries"),
        ("duplicate_id", "--id-column", "is not a unique id"),
        ("missing_file", "--polygons", "does not exist"),
        ("unknown_stat", "--stat", "unknown statistic 'mode'"),
        ("points", "--polygons", "must hold polygons"),
    ],
)
def test_bad_input(s, tmp_path, capsys, case, flag, message):
    good = [box(s, 10, 10, 20, 20), box(s, 30, 30, 40, 40), box(s, 50, 50, 60, 60)]
    bowtie = shapely.Polygon([xy(s, 0, 0), xy(s, 10, 10), xy(s, 10, 0), xy(s, 0, 10)])
    frame = geopandas.GeoDataFrame({"id": [1, 2, 3]}, geometry=good, crs=s.grid.crs)
    extra = []
    path = tmp_path / "p.parquet"
    if case == "no_crs":
        frame = frame.set_crs(None, allow_override=True)
    elif case == "invalid":
        frame.geometry = [good[0], bowtie, bowtie]
    elif case == "empty":
        frame.geometry = [good[0], shapely.Polygon(), good[2]]
    elif case == "duplicate_id":
        frame["id"] = [1, 2, 1]
        extra = ["--id-column", "id"]
    elif case == "unknown_stat":
        extra = ["--stat", "mean,mode"]
    elif case == "points":
        frame.geometry = [g.centroid for g in good]
    if case != "missing_file":
        write(frame, path)
    out = tmp_path / "o.parquet"
    assert run("--embeddings", s.path, "--polygons", path, "--output", out, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"efm zonal: error: {flag}: " in err and message in err
    assert not out.exists() and not (tmp_path / "o.parquet.parts").exists()


def test_skip_invalid_says_how_many(s, tmp_path, capsys):
    bowtie = shapely.Polygon([xy(s, 0, 0), xy(s, 10, 10), xy(s, 10, 0), xy(s, 0, 10)])
    good = box(s, 10.2, 10.2, 20.7, 20.7)
    frame = geopandas.GeoDataFrame(
        {"id": [1, 2, 3]}, geometry=[bowtie, good, shapely.Polygon()], crs=s.grid.crs
    )
    frame.to_parquet(tmp_path / "p.parquet")
    out = tmp_path / "o.parquet"
    argv = ["--embeddings", s.path, "--polygons", tmp_path / "p.parquet", "--output", out]
    assert run(*argv, "--id-column", "id", "--skip-invalid", "--years", "2021") == 0
    assert "skipped 2 empty or invalid geometries" in capsys.readouterr().err
    table = pd.read_parquet(out)  # centres 10.5 .. 20.5: 11 x 11 pixels
    assert list(table["id"]) == [2] and list(table["pixel_count"]) == [121]


def test_refuses_to_replace_a_file_efm_did_not_write(s, tmp_path, capsys):
    write(fields(s), tmp_path / "f.parquet")
    (tmp_path / "o.parquet").write_bytes(b"not ours")
    argv = ["--embeddings", s.path, "--polygons", tmp_path / "f.parquet"]
    assert run(*argv, "--output", tmp_path / "o.parquet", "--overwrite") == 2
    assert "efm replaces only what it wrote" in capsys.readouterr().err
    assert (tmp_path / "o.parquet").read_bytes() == b"not ours"
