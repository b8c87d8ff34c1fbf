"""Flex template entry file (FLEX_TEMPLATE_PYTHON_PY_FILE) of `efm sample`: see templates/flex_launcher.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # templates/

from flex_launcher import launch  # noqa: E402

if __name__ == "__main__":
    sys.exit(launch("sample"))
