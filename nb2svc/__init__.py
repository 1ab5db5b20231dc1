"""nb2svc: compile Jupyter notebooks into HTTP microservices and serve kernels over websockets."""

from __future__ import annotations

from nb2svc._version import __version__

__all__ = ["__version__"]
