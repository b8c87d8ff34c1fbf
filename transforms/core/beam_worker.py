"""A Beam plugin (`--beam_plugins=transforms.core.beam_worker`): imported once when a local
runner's worker process starts, it sends that process's printed tracebacks to the run's log
instead of the terminal (transforms/core/run_log.py). Importing it is all it takes."""

from transforms.core import run_log

run_log.install()
