"""Runs the Earth Engine emulator as its own process (so it does not share the caller's GIL).

    python -m emulators.earthengine --port 0 --images DIR [--latency 0.3] [--latency-per-mb 0.05] [--max-in-flight 40] ...
    python -m emulators.earthengine --procedural [--procedural-years 2021,2022] ...  (any area, no memory)

DIR is written by ``emulators.earthengine.catalog.save_images`` (manifest.json + one
.npy per image). The first stdout line is the URL; nothing else goes to stdout.
Control routes: GET /_emulator/stats, POST /_emulator/reset, POST /_emulator/config.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from emulators.earthengine import pixels
from emulators.earthengine.catalog import load_images
from emulators.earthengine.procedural import procedural_collection
from emulators.earthengine.server import EarthEngineEmulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emulators.earthengine", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--images", action="append", default=[], help="image directory (repeatable)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="base seconds per computePixels/compute request"
    )
    parser.add_argument(
        "--latency-per-mb",
        type=float,
        default=0.0,
        help="+ seconds per MB (1e6 bytes) of each computePixels reply (default 0: flat latency)",
    )
    parser.add_argument("--max-in-flight", type=int, default=40)
    parser.add_argument("--max-request-bytes", type=int, default=pixels.DEFAULT_MAX_REQUEST_BYTES)
    parser.add_argument("--error-rates", default="{}", help='JSON, e.g. {"429": 0.05, "503": 0.01}')
    parser.add_argument("--truncate-rate", type=float, default=0.0)
    parser.add_argument(
        "--fault-kinds", default="computePixels", help="comma-separated request kinds"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--procedural",
        action="store_true",
        help="serve the embedding collection procedurally (emulators/earthengine/procedural.py)",
    )
    parser.add_argument(
        "--procedural-years",
        default="2021",
        help="years of the procedural collection, comma-separated",
    )
    parser.add_argument(
        "--record-requests",
        action="store_true",
        help="keep every request in memory (off: only counters, for long benchmarks)",
    )
    args = parser.parse_args(argv)

    emulator = EarthEngineEmulator(
        max_in_flight=args.max_in_flight,
        latency_s=args.latency,
        latency_per_mb_s=args.latency_per_mb,
        error_rates=json.loads(args.error_rates),
        truncate_rate=args.truncate_rate,
        seed=args.seed,
        max_request_bytes=args.max_request_bytes,
        fault_kinds=tuple(k for k in args.fault_kinds.split(",") if k),
        port=args.port,
        host=args.host,
        record_requests=args.record_requests,
    )
    for directory in args.images:
        emulator.add_images(load_images(directory))
    if args.procedural:
        emulator.add_images(
            procedural_collection([int(y) for y in args.procedural_years.split(",")])
        )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with emulator:
        sys.stdout.write(emulator.url + "\n")
        sys.stdout.flush()
        stop.wait()


if __name__ == "__main__":
    main()
