"""Every kind of efm product, each made by its own command on the offline sample data, and each
command's argv to write one more."""

from __future__ import annotations

import dataclasses
import pathlib

from pipelines import classify, cluster, demo, export, extract, make_sample_data, sample, train
from sample_data import generate as sample_data
from tests.helpers.runners import FNAPI

RUN = {
    "extract": extract.run,
    "classify": classify.run,
    "sample": sample.run,
    "train": train.run,
    "cluster": cluster.run,
    "export": export.run,
    "make-sample-data": make_sample_data.run,
    "demo": demo.run,
}


MARKER_FILE = (
    ".efm-product"  # transforms.MARKER_FILE (literal: this file also runs against older code)
)


@dataclasses.dataclass
class World:
    root: pathlib.Path
    data: sample_data.SampleData
    emb: str
    samples: str
    model: str
    classes: str
    tif: str

    @property
    def bbox(self) -> str:
        return ",".join(repr(v) for v in self.data.bbox)


def argv(cmd: str, w: World, output, *extra) -> list[str]:
    out = str(output)
    return {
        "extract": [
            "--source",
            "cog",
            "--cog-root",
            w.data.mirror,
            f"--bbox={w.bbox}",
            "--crs",
            w.data.crs,
            "--years",
            "2022",
            "--tuning",
            "chunk_size=128",
            "--tuning",
            "max_concurrent_requests=2",
            "--output",
            out,
            *extra,
            *FNAPI,
        ],
        "classify": ["--embeddings", w.emb, "--model", w.model, "--output", out, *extra, *FNAPI],
        "sample": [
            "--embeddings",
            w.emb,
            "--points",
            w.data.points,
            "--label-column",
            "label",
            "--output",
            out,
            *extra,
            *FNAPI,
        ],
        "train": [
            "--samples",
            w.samples,
            "--classifier",
            "knn",
            "--tuning",
            "folds=3",
            "--output",
            out,
            *extra,
        ],
        "cluster": [
            "--embeddings",
            w.emb,
            "--clusters",
            "3",
            "--tuning",
            "sample_size=300",
            "--output",
            out,
            *extra,
            *FNAPI,
        ],
        "export": ["--input", w.classes, "--output", out, "--png", *extra],
        "make-sample-data": ["--output", out, "--size", "small", "--years", "2022", *extra],
        "demo": ["--output", out, "--tuning", "small=true", *extra],
    }[cmd]


def call(cmd: str, args: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = RUN[cmd](args)
    return code, capsys.readouterr().err.strip()


def make_world(root: pathlib.Path) -> World:
    data = sample_data.generate(
        str(root / "sample-data"), sample_data.SampleSpec(**sample_data.SMALL, years=(2022,))
    )
    w = World(
        root,
        data,
        str(root / "emb.zarr"),
        str(root / "samples.parquet"),
        str(root / "model.skops"),
        str(root / "classes.zarr"),
        str(root / "map.tif"),
    )
    assert extract.run(argv("extract", w, w.emb)) == 0
    assert sample.run(argv("sample", w, w.samples)) == 0
    assert train.run(argv("train", w, w.model)) == 0
    assert classify.run(argv("classify", w, w.classes)) == 0
    assert export.run(argv("export", w, w.tif)) == 0
    return w
