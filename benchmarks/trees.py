"""efm at an earlier commit, exported beside this tree, for benchmarks that run both side by side."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export(ref: str, out: str) -> str:
    """The tree of git ref `ref` at `out` (`git archive`; kept if it is there already)."""
    if not os.path.exists(os.path.join(out, "pipelines", "cli.py")):
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", "--format=tar", ref], check=True, capture_output=True
        ).stdout
        with tempfile.TemporaryFile() as f:
            f.write(archive)
            f.seek(0)
            with tarfile.open(fileobj=f) as tar:
                tar.extractall(out, filter="data")
    return out
