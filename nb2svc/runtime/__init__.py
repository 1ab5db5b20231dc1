"""The runtime: kernels, the warm pool, the API-mode Flask app and the gunicorn server.

Imported by generated ``app.py`` files and by ``nb2svc serve``. It never parses
annotations: it serves a :class:`nb2svc.compiler.spec.ServiceSpec`.
Import the submodules directly (``nb2svc.runtime.http_api``, ``.pool``, ``.server``);
this package stays empty so that importing one part does not import gevent-patched
pieces of another.
"""
