"""One loaded model per worker process: a module-level cache keyed by the file's path and sha256.

Every DoFn instance of a worker process (one per thread, re-made per bundle on some runners)
asks here in `setup()`; only the first parses the file (and pays skops' import and trust check),
the others get the same object. With an in-process runner the driver's own load is reused too
(`put`). A hit still reads and hashes the file: a model file changed since (another sha256) is
never served from the cache -- it is loaded, and verified against the sha256 the driver checked.
"""

from __future__ import annotations

import threading

from transforms.learning import models

MAX_MODELS = 4  # a process runs one pipeline at a time; a few entries cover tests and notebooks

_lock = threading.Lock()
_models: dict[tuple[str, str], object] = {}
loads = 0  # files parsed by this process (a hit does not count): what the tests check


def load(path: str, sha256: str):
    """The model in `path`, whose sha256 must be `sha256` (InputError otherwise); parsed once per process."""
    global loads
    digest = models.sha256_bytes(models._read(path, "--model"))
    with _lock:  # held while loading: concurrent setups of one process load the file once
        if digest == sha256.strip().lower() and (path, digest) in _models:
            return _models[(path, digest)]
        model = models.load_verified(
            path, sha256
        )  # re-reads; refuses anything but the checked file
        loads += 1
        _remember(path, sha256.strip().lower(), model)
        return model


def put(loaded: models.LoadedModel) -> None:
    """Offer a model the driver has loaded and checked (reused when the workers run in this process)."""
    with _lock:
        _remember(loaded.path, loaded.sha256, loaded.model)


def _remember(path: str, digest: str, model) -> None:
    _models.pop((path, digest), None)
    _models[(path, digest)] = model
    while len(_models) > MAX_MODELS:
        _models.pop(next(iter(_models)))


def clear() -> None:
    global loads
    with _lock:
        _models.clear()
        loads = 0
