"""efm sample: each point gets exactly the embedding of the pixel it falls in."""

from __future__ import annotations

import geopandas
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely

from pipelines import sample as sample_cli
from tests.helpers.runners import FNAPI
from tests.helpers.store_factory import BANDS, make_store
from transforms.learning import sample_table, sampling
from transforms.storage import readers


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        dtype: make_store(str(root / f"{dtype}.zarr"), dtype=dtype, seed=5)
        for dtype in ("float32", "int8")
    }


def chosen_pixels(s, n=150, seed=0):
    """Random pixels plus every pixel around chunk edges (rows/cols 127, 128, 255, 256) and corners."""
    rng = np.random.default_rng(seed)
    rows, cols = list(rng.integers(0, s.grid.height, n)), list(rng.integers(0, s.grid.width, n))
    for r in (0, 127, 128, 255, 256, s.grid.height - 1):
        for c in (0, 127, 128, 255, 256 if s.grid.width > 256 else 255, s.grid.width - 1):
            rows.append(r)
            cols.append(c)
    return np.array(rows), np.array(cols)


def centres(s, rows, cols):
    return s.grid.x0 + (cols + 0.5) * s.grid.scale, s.grid.y0 - (rows + 0.5) * s.grid.scale


def check_table(table: pd.DataFrame, s, rows, cols):
    """Every row holds the vector at (year, pixel_y, pixel_x) and that pixel is the point's."""
    t = np.searchsorted(s.years, table["year"].to_numpy())
    np.testing.assert_array_equal(
        table[list(BANDS)].to_numpy(), s.values[t, table["pixel_y"], table["pixel_x"]]
    )
    np.testing.assert_array_equal(table["pixel_y"].to_numpy(), rows[table["point_id"]])
    np.testing.assert_array_equal(table["pixel_x"].to_numpy(), cols[table["point_id"]])
    # and nothing valid was dropped: every (point, year) with data is there
    expected = {
        (p, y)
        for p in range(len(rows))
        for ti, y in enumerate(s.years)
        if rows[p] >= 0 and s.valid[ti, rows[p], cols[p]]
    }
    assert set(zip(table["point_id"], table["year"])) == expected


def run(*argv):
    return sample_cli.run([*map(str, argv), *FNAPI])


@pytest.mark.parametrize("fmt", ["csv", "geojson", "gpkg", "geoparquet"])
def test_points_in_any_format_and_crs_get_their_pixel(stores, tmp_path, fmt, capsys):
    s = stores["float32"]
    rows, cols = chosen_pixels(s)
    x, y = centres(s, rows, cols)
    labels = np.where(rows % 2 == 0, "even", "odd")
    if fmt == "csv":  # lon/lat
        lon, lat = pyproj.Transformer.from_crs(s.grid.crs, "EPSG:4326", always_xy=True).transform(
            x, y
        )
        pd.DataFrame({"Lon": lon, "Lat": lat, "cls": labels}).to_csv(
            tmp_path / "p.csv", index=False
        )
    else:
        crs = {"geojson": "EPSG:4326", "gpkg": "EPSG:3857", "geoparquet": s.grid.crs}[fmt]
        frame = geopandas.GeoDataFrame(
            {"cls": labels}, geometry=shapely.points(x, y), crs=s.grid.crs
        ).to_crs(crs)
        if fmt == "geoparquet":
            frame.to_parquet(tmp_path / "p.geoparquet")
        else:
            frame.to_file(tmp_path / f"p.{fmt}", driver="GeoJSON" if fmt == "geojson" else "GPKG")
    points = next(tmp_path.glob("p.*"))
    out = tmp_path / "samples.parquet"
    assert (
        run("--embeddings", s.path, "--points", points, "--label-column", "cls", "--output", out)
        == 0
    )
    printed = capsys.readouterr().out
    table = pd.read_parquet(out)
    check_table(table, s, rows, cols)
    assert (table["label"].to_numpy() == labels[table["point_id"]]).all()
    nodata = sum(not s.valid[t, r, c] for r, c in zip(rows, cols) for t in range(len(s.years)))
    assert nodata > 0 and f"dropped: no data (point, year)  {nodata}" in printed
    assert (
        f"chunk reads                     {2 * 9}" in printed
    )  # 3 x 3 chunks, each read once per year
    meta = sample_table.read_table_metadata(str(out))
    assert (
        meta["grid"]["crs"] == s.grid.crs
        and meta["years"] == [2021, 2022]
        and meta["source"] == "synthetic:store_factory"
    )


def test_int8_store_points_on_pixel_edges_and_outside(stores, tmp_path, capsys):
    s = stores["int8"]
    info = readers.store_info(s.path)
    # exactly on the chunk edge line between col 127 and 128 / row 127 and 128: the pixel right/below
    edge_x, edge_y = s.grid.x0 + 128 * s.grid.scale, s.grid.y0 - 128 * s.grid.scale
    xs = np.array(
        [
            edge_x,
            edge_x - 1e-6,
            s.grid.x0,
            s.grid.x0 + s.grid.width * s.grid.scale,
            s.grid.x0 - 5,
            edge_x,
        ]
    )
    ys = np.array(
        [
            edge_y,
            edge_y,
            s.grid.y0,
            s.grid.y0 - 5,
            s.grid.y0 - 5,
            s.grid.y0 - s.grid.height * s.grid.scale,
        ]
    )
    rows, cols = sampling.pixel_index(info, xs, ys)
    np.testing.assert_array_equal(rows, [128, 128, 0, -1, -1, -1])
    np.testing.assert_array_equal(cols, [128, 127, 0, -1, -1, -1])
    pd.DataFrame({"x": xs, "y": ys, "label": [1, 2, 3, 4, 5, 6]}).to_csv(
        tmp_path / "p.csv", index=False
    )
    out = tmp_path / "s.parquet"
    assert (
        run(
            "--embeddings",
            s.path,
            "--points",
            tmp_path / "p.csv",
            "--tuning",
            f"points_crs={s.grid.crs}",
            "--label-column",
            "label",
            "--output",
            out,
        )
        == 0
    )
    assert "dropped: outside the store      3" in capsys.readouterr().out
    check_table(pd.read_parquet(out), s, rows, cols)


def test_bad_points_input(stores, tmp_path, capsys):
    s = stores["float32"]
    pd.DataFrame({"lon": [0.0], "lat": [0.0], "cls": ["a"]}).to_csv(
        tmp_path / "far.csv", index=False
    )
    assert (
        run(
            "--embeddings",
            s.path,
            "--points",
            tmp_path / "far.csv",
            "--label-column",
            "cls",
            "--output",
            tmp_path / "o.parquet",
        )
        == 2
    )
    assert "none of the 1 points" in capsys.readouterr().err
    assert (
        run(
            "--embeddings",
            s.path,
            "--points",
            tmp_path / "far.csv",
            "--label-column",
            "class",
            "--output",
            tmp_path / "o.parquet",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--label-column: " in err and "its columns are lon, lat, cls" in err
    assert not (tmp_path / "o.parquet").exists()


def test_split_by_chunk_groups_every_point_once():
    rng = np.random.default_rng(0)
    batch = {
        "id": np.arange(1000),
        "row": rng.integers(0, 1000, 1000),
        "col": rng.integers(0, 700, 1000),
    }
    parts = list(sampling.split_by_chunk(batch, 256, 128))
    ids = np.concatenate([p["id"] for _, p in parts])
    assert sorted(ids) == list(range(1000)) and len({k for k, _ in parts}) == len(parts)
    for (r0, c0), p in parts:
        assert (p["row"] // 256 * 256 == r0).all() and (p["col"] // 128 * 128 == c0).all()


def points_with_columns(s, tmp_path, fmt, label=True):
    """Points on chosen pixels with numeric columns (float with gaps, int), text and a boolean; the file and the pixels."""
    rows, cols = chosen_pixels(s, n=60, seed=4)
    x, y = centres(s, rows, cols)
    rng = np.random.default_rng(7)
    agbd = rng.gamma(2.0, 50.0, len(rows))
    agbd[::7] = np.nan
    columns = {
        **({"cls": np.where(rows % 2 == 0, "even", "odd")} if label else {}),
        "agbd": agbd,
        "count": rng.integers(0, 1000, len(rows)),
        "name": [f"p{i}" for i in range(len(rows))],
        "flag": rows % 3 == 0,
    }
    if fmt == "csv":
        lon, lat = pyproj.Transformer.from_crs(s.grid.crs, "EPSG:4326", always_xy=True).transform(
            x, y
        )
        pd.DataFrame({"lon": lon, "lat": lat, **columns}).to_csv(tmp_path / "p.csv", index=False)
        return tmp_path / "p.csv", pd.read_csv(tmp_path / "p.csv"), rows, cols
    geopandas.GeoDataFrame(columns, geometry=shapely.points(x, y), crs=s.grid.crs).to_file(
        tmp_path / "p.geojson", driver="GeoJSON"
    )
    return tmp_path / "p.geojson", geopandas.read_file(tmp_path / "p.geojson"), rows, cols


@pytest.mark.parametrize("fmt", ["csv", "geojson"])
def test_sample_keeps_the_points_numeric_columns(stores, tmp_path, fmt, capsys):
    s = stores["float32"]
    points, file, rows, cols = points_with_columns(s, tmp_path, fmt)
    out = tmp_path / "samples.parquet"
    assert (
        run("--embeddings", s.path, "--points", points, "--label-column", "cls", "--output", out)
        == 0
    )
    assert "columns kept                    agbd, count" in capsys.readouterr().out
    table = pd.read_parquet(out)
    check_table(table, s, rows, cols)
    ids = table["point_id"].to_numpy()
    # every numeric column but the coordinates and the label, with the file's values (gaps stay gaps)
    assert [
        c
        for c in table.columns
        if c
        not in ("point_id", "label", "point_x", "point_y", "year", "pixel_x", "pixel_y", *BANDS)
    ] == ["agbd", "count"]
    np.testing.assert_array_equal(table["agbd"].to_numpy(), file["agbd"].to_numpy()[ids])
    np.testing.assert_array_equal(table["count"].to_numpy(), file["count"].to_numpy()[ids])
    assert (
        table["count"].dtype == file["count"].dtype
        and table["count"].dtype.kind == "i"
        and np.isnan(table["agbd"]).any()
    )
    assert sample_table.read_table_metadata(str(out))["keep_columns"] == ["agbd", "count"]


def test_sample_for_regression_without_a_label(stores, tmp_path, capsys):
    s = stores["int8"]
    points, file, rows, cols = points_with_columns(s, tmp_path, "csv", label=False)
    out = tmp_path / "gedi.parquet"
    assert (
        run("--embeddings", s.path, "--points", points, "--keep-columns", "agbd", "--output", out)
        == 0
    )
    table = pd.read_parquet(out)
    check_table(table, s, rows, cols)
    assert "label" not in table.columns and "count" not in table.columns
    np.testing.assert_array_equal(
        table["agbd"].to_numpy(), file["agbd"].to_numpy()[table["point_id"]]
    )
    meta = sample_table.read_table_metadata(str(out))
    assert meta["keep_columns"] == ["agbd"] and meta["label_column"] is None
    # --keep-columns none: the table of before, nothing of the file's columns
    file.assign(cls="a").to_csv(tmp_path / "l.csv", index=False)
    assert (
        run(
            "--embeddings",
            s.path,
            "--points",
            tmp_path / "l.csv",
            "--label-column",
            "cls",
            "--keep-columns",
            "none",
            "--output",
            tmp_path / "n.parquet",
        )
        == 0
    )
    assert list(pd.read_parquet(tmp_path / "n.parquet").columns) == [
        "point_id",
        "label",
        "point_x",
        "point_y",
        "year",
        "pixel_x",
        "pixel_y",
        *BANDS,
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--label-column", "cls", "--keep-columns", "name"],
            "--keep-columns: column 'name' of .* is not numeric",
        ),
        (
            ["--label-column", "cls", "--keep-columns", "agbd,height"],
            "--keep-columns: .* has no column 'height'",
        ),
        (
            ["--label-column", "cls", "--keep-columns", "cls"],
            "--keep-columns: 'cls' is a column the table already has",
        ),
        ([], "--label-column: required: name the class label column, or .* --keep-columns"),
        (["--keep-columns", "none"], "--label-column: required"),
    ],
)
def test_bad_keep_columns(stores, tmp_path, capsys, argv, message):
    s = stores["float32"]
    points, *_ = points_with_columns(s, tmp_path, "csv")
    assert (
        run("--embeddings", s.path, "--points", points, "--output", tmp_path / "o.parquet", *argv)
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and __import__("re").search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]
