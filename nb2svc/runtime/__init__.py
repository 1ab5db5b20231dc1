"""The runtime: the kernel layer, the app skeleton, API mode, kernel mode and the gunicorn server.

Imported by generated ``app.py`` files and by ``nb2svc serve``. It never parses
annotations: it serves a :class:`nb2svc.compiler.spec.ServiceSpec`, as a serve plan
(:mod:`nb2svc.plan`) says. A worker enters through :mod:`.entry` and keeps its state in one
:class:`~.worker_runtime.WorkerRuntime`; nothing here is module state.
Import the submodules directly (``nb2svc.runtime.entry``, ``.http_api``, ``.kernels_api``,
``.webapp``, ``.kernel``, ``.server``);
this package stays empty so that importing one part does not import gevent-patched
pieces of another.
"""
