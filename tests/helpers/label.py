"""efm label's tests: a store pixel's lon/lat, and the one error line a refusal prints."""

from __future__ import annotations

from tests.helpers import store_factory


def lonlat_of(s, row, col):
    import pyproj

    return pyproj.Transformer.from_crs(s.grid.crs, "EPSG:4326", always_xy=True).transform(
        *store_factory.pixel_centre(s, row, col)
    )


def one_error_line(capsys, flag: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"efm label: error: {flag}: "), err
    return err[0]
