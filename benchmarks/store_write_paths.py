"""Benchmark: the fixed and per-chunk costs issue 9's speed work removed, each measured alone (min of repeats,
so a loaded machine moves it less than a whole-run figure).

  setup   writing a change store's template (2041 x 2552, 512-px chunks), in a fresh process each time:
          xarray-beam's setup_zarr (what store.setup did) vs transforms/storage/zarr_direct.create (what it does),
          imports included (setup_zarr builds a dask graph, which imports dask.distributed);
  write   writing 20 float32 chunks of 512 x 512 into it: xarray-beam's write_chunk_to_zarr (what
          store.WriteChunks did) vs zarr_direct.ChunkWriter (what it does) vs a plain zarr write
          (`array[region] = values`, the numpy pass's write);
  beam    an empty pipeline of run_map's shape (Create | FlatMap | [Reshuffle] | Map | Map | Count | Map)
          on the in-process runner, with and without the Reshuffle (dropped on one in-process worker).

    python benchmarks/store_write_paths.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE, CHUNK = (2041, 2552), 512


def _cpu() -> float:
    return time.process_time()


def _template():
    import numpy as np
    import xarray as xr

    from transforms.products.change import similarity_variable
    from transforms.products.chunk_map import output_template

    ds = xr.Dataset(
        coords={
            "y": np.arange(SHAPE[0], dtype=np.float64),
            "x": np.arange(SHAPE[1], dtype=np.float64),
        }
    )
    return output_template(
        ds,
        [similarity_variable("s")],
        None,
        chunk_rows=CHUNK,
        chunk_cols=CHUNK,
        product="change",
        attrs={},
    )


def child_setup(how: str, path: str) -> None:
    """In a fresh process: CPU s of one template write, imports it needs included (printed)."""
    template = _template()  # imports xarray, dask, Beam (as the CLI has by then)
    start = _cpu()
    if how == "xarray-beam":
        import xarray_beam as xbeam

        xbeam.setup_zarr(
            template,
            path,
            zarr_chunks={"y": CHUNK, "x": CHUNK},
            zarr_format=2,
            encoding={"similarity": {"_FillValue": float("nan")}},
        )
    else:
        from transforms.storage import zarr_direct

        zarr_direct.create(path, template, {"y": CHUNK, "x": CHUNK}, {"similarity": float("nan")})
    print(_cpu() - start)


def chunks():
    import numpy as np
    import xarray as xr
    import xarray_beam as xbeam

    rng = np.random.default_rng(0)
    for r in range(0, 4 * CHUNK, CHUNK):
        for c in range(0, 5 * CHUNK, CHUNK):
            rows, cols = min(CHUNK, SHAPE[0] - r), min(CHUNK, SHAPE[1] - c)
            values = rng.random((rows, cols), dtype=np.float32)
            yield xbeam.Key({"y": r, "x": c}), xr.Dataset({"similarity": (("y", "x"), values)})


def write_costs(repeats: int) -> dict:
    import xarray_beam as xbeam
    import zarr

    from transforms.storage import store, zarr_direct

    template = _template()
    data = list(chunks())
    out = {}
    for how in ["xarray-beam", "zarr_direct", "plain zarr"]:
        best = None
        for _ in range(repeats):
            folder = tempfile.mkdtemp(prefix="efm-bench-write-")
            path = os.path.join(folder, "s.zarr")
            store.setup(path, template)
            start = _cpu()
            if how == "xarray-beam":
                for key, chunk in data:
                    xbeam.write_chunk_to_zarr(key, chunk, path, template)
            elif how == "zarr_direct":
                writer = zarr_direct.ChunkWriter(path, template, {"y": CHUNK, "x": CHUNK})
                for key, chunk in data:
                    writer.write(key.offsets, chunk)
            else:
                array = zarr.open_group(path, mode="r+", zarr_format=2)["similarity"]
                for key, chunk in data:
                    v = chunk["similarity"].values
                    array[
                        key.offsets["y"] : key.offsets["y"] + v.shape[0],
                        key.offsets["x"] : key.offsets["x"] + v.shape[1],
                    ] = v
            seconds = _cpu() - start
            best = seconds if best is None else min(best, seconds)
            shutil.rmtree(folder)
        out[how] = best
    return out


def child_beam(reshuffle: bool) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    start = _cpu()
    p = beam.Pipeline(options=PipelineOptions([]))
    x = p | beam.Create(list(range(4))) | beam.FlatMap(lambda r: range(r * 5, r * 5 + 5))
    if reshuffle:
        x = x | beam.Reshuffle()
    x = x | "A" >> beam.Map(lambda i: (i, i)) | "B" >> beam.Map(lambda kv: str(kv[0]))
    _ = x | beam.combiners.Count.Globally() | "C" >> beam.Map(lambda n: None)
    p.run().wait_until_finish()
    print(_cpu() - start)


def fresh(args: list[str]) -> float:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "setup":
            child_setup(args.child[1], args.child[2])
        else:
            child_beam(args.child[1] == "yes")
        return 0
    load = os.getloadavg()[0]
    rows = []
    for how in ["xarray-beam", "zarr_direct"]:
        best = None
        for _ in range(args.repeats):
            folder = tempfile.mkdtemp(prefix="efm-bench-setup-")
            best = min(
                best or 1e9, fresh(["--child", "setup", how, os.path.join(folder, "s.zarr")])
            )
            shutil.rmtree(folder)
        rows.append((f"setup: {how} (fresh process)", best))
    for how, seconds in write_costs(args.repeats).items():
        rows.append((f"write 20 chunks: {how}", seconds))
    for reshuffle in ["yes", "no"]:
        rows.append(
            (
                f"beam, empty run_map-shaped pipeline, Reshuffle: {reshuffle}",
                min(fresh(["--child", "beam", reshuffle]) for _ in range(args.repeats)),
            )
        )
    print(f"| what | CPU s (min of {args.repeats}) |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    print(
        f"\nload average (1 min) before: {load:.1f}, after: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
