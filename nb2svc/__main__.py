"""Allow python -m nb2svc (through the same traceback guard as the console script)."""

from nb2svc.cli import run

run()
