"""An Earth Engine emulator for tests and benchmarks.

It serves the REST API that the real ``earthengine-api`` client and ``xee`` call
(discovery, algorithms, assets, ``value:compute``, ``image:computePixels``) on
127.0.0.1, evaluates the expression graphs they send against in-memory images,
and mimics the service's limits (request size, concurrency) and faults.

    from emulators.earthengine import EarthEngineEmulator
    with EarthEngineEmulator() as emu:
        emu.add_image(...)
        ee.Initialize(credentials=..., project="test-project", url=emu.url)
"""

from emulators.earthengine.process import EarthEngineEmulatorProcess
from emulators.earthengine.server import EarthEngineEmulator, RequestRecord
from emulators.earthengine.synthetic import make_embedding_collection

__all__ = [
    "EarthEngineEmulator",
    "EarthEngineEmulatorProcess",
    "RequestRecord",
    "make_embedding_collection",
]
