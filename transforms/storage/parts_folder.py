"""`efm sample`'s parts folder (`<output>.parts`): the part files of an unfinished table, marked
so that only a folder efm sample made is ever cleared."""

from __future__ import annotations

import re

from transforms.core.errors import InputError
from transforms.storage import places

PARTS_MARKER = ".efm-parts"  # in `efm sample`'s <output>.parts folder
_PART = re.compile(r"^part-\d+-\d+\.parquet$")


def start_parts(parts_dir: str, flag: str = "--output") -> None:
    """Clear a parts folder left by an interrupted `efm sample` (only one it marked), then mark a fresh one."""
    fs, root = places.location(parts_dir)
    files = places.listing(fs, root)
    if files:
        if PARTS_MARKER not in files or any(
            not (_PART.match(f) or f == PARTS_MARKER) for f in files
        ):
            raise InputError(
                flag,
                f"{parts_dir} (where `efm sample` keeps its parts) exists and was not written by efm sample; move it away or choose another {flag}",
            )
        fs.rm([f"{root}/{f}" for f in files])
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root}/{PARTS_MARKER}", b"efm sample parts\n")


def check_parts(parts_dir: str, flag: str = "--output") -> None:
    """Before anything is written: refuse a parts folder efm did not write."""
    fs, root = places.location(parts_dir)
    files = places.listing(fs, root)
    if files and (
        PARTS_MARKER not in files or any(not (_PART.match(f) or f == PARTS_MARKER) for f in files)
    ):
        raise InputError(
            flag,
            f"{parts_dir} (where `efm sample` keeps its parts) exists and was not written by efm sample; move it away or choose another {flag}",
        )
