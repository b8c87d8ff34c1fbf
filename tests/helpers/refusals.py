"""A refusal as the user sees it: `efm <argv>` exits 2 with one line and writes nothing."""

from __future__ import annotations

import os

from pipelines import cli


def listing(root) -> list[str]:
    """Every path under root (relative): what 'nothing written' compares."""
    out = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            out.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(out)


def refused(argv, tmp_path, capsys, line):
    """Run `efm <argv>` in tmp_path: exit 2, stderr exactly `line`, tmp_path unchanged."""
    before = listing(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [line], err
    assert listing(tmp_path) == before
