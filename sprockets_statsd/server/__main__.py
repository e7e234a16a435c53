"""Run the statsd server: ``python -m sprockets_statsd.server``."""

from __future__ import annotations

import sys

from sprockets_statsd.server.cli import main

__all__: list[str] = []

if __name__ == '__main__':
    sys.exit(main())
