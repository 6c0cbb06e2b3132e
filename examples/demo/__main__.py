"""``python -m examples.demo`` (from the checkout's root): run the demo."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
