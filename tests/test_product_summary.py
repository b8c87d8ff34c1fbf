"""pipelines/product.py: the summary rows classify, predict, similarity and change print, written out."""

from __future__ import annotations

import types

from pipelines import product


class Subset:
    """A subset's rows as transforms/storage/subset.py gives them (here: one row naming n_years)."""

    def __init__(self, active: bool):
        self.active = active

    def summary_rows(self, n_years: int = 1):
        return [("chunks skipped (outside the area)", n_years * 3)] if self.active else []


RESULT = product.MapRun(
    totals={"chunks_written": 4, "pixels_computed": 5000, "pixels_nodata": 12},
    seconds=2.0,
    planned=6,
    already_done=2,
)
INFO = types.SimpleNamespace(width=130, height=140, crs="EPSG:32631")


def test_a_timed_product_names_its_years_and_the_pixel_rate():
    rows = product.summary_rows(
        RESULT,
        INFO,
        Subset(active=True),
        [("model", "KNeighborsClassifier, 2 classes")],
        [2021, 2022],
        ("pixels classified", "pixels_computed"),
        "pixels without data (left as fill)",
        [("class encoding", "uint8, fill 255")],
    )
    assert rows == [
        ("model", "KNeighborsClassifier, 2 classes"),
        ("grid", "130 x 140 px in EPSG:32631, year(s) 2021, 2022"),
        ("chunks planned", 6),
        ("chunks already done (resume)", 2),
        ("chunks written", 4),
        ("input chunks missing", "0"),
        ("chunks skipped (outside the area)", 6),  # two years
        ("pixels classified", 5000),
        ("pixels without data (left as fill)", 12),
        ("class encoding", "uint8, fill 255"),
        ("wall time", "2.0 s (2,500 px/s)"),
    ]


def test_a_map_without_time_has_no_years():
    rows = product.summary_rows(
        RESULT,
        INFO,
        Subset(active=False),
        [("years", "2021 -> 2022")],
        None,
        ("pixels compared", "pixels_computed"),
        "pixels without data in either year (NaN)",
    )
    assert rows[:2] == [("years", "2021 -> 2022"), ("grid", "130 x 140 px in EPSG:32631")]
    assert rows[-3:] == [
        ("pixels compared", 5000),
        ("pixels without data in either year (NaN)", 12),
        ("wall time", "2.0 s (2,500 px/s)"),
    ]
