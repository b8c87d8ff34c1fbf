"""Writing a benchmark's section of benchmarks/RESULTS.md (the one place that knows the file's layout)."""

from __future__ import annotations

import os

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def write_section(section: str, markdown: str, path: str = PATH) -> str:
    """Replace the `section` heading's part of RESULTS.md by `markdown` (append it if absent); returns the path."""
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    start = text.find(section)
    if start >= 0:
        end = text.find("\n## ", start + len(section))
        text = text[:start] + markdown + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + markdown
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path
