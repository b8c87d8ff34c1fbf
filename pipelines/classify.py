"""`efm classify`: another name for `efm predict` (pipelines/predict.py), kept so scripts keep
working: the same flags, the same output, its lines say `efm classify`; the one difference is that
it still refuses a regressor, naming `efm predict`. `python -m pipelines.classify` runs it too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipelines import common, predict

PROG = "efm classify"


def build_parser():
    return predict.build_parser(prog=PROG)


def main(argv: Sequence[str] | None = None) -> int:
    return predict.main(argv, prog=PROG)


def run(argv: Sequence[str] | None = None) -> int:
    return common.run(PROG, main, argv)


if __name__ == "__main__":
    sys.exit(run())
