"""Kernel mode: Jupyter kernels served over the Jupyter Server REST + websocket API.

Modules, one job each: :mod:`.rest` (the Flask app and its routes), :mod:`.channels`
(one websocket client), :mod:`.wire` (both websocket wire formats), :mod:`.managed` (one
kernel: state, clients, restarts), :mod:`.manager` (the registry: limits, env, seeding,
culling), :mod:`.warm` (hidden pre-started kernels), :mod:`.sessions`,
:mod:`.kernelspecs`, :mod:`.seed` and :mod:`.worker` (the gunicorn worker and server).

Nothing is imported here: the CLI imports :mod:`.worker` and :mod:`.seed` in the gunicorn
master, and everything that touches zmq or jupyter_client must be imported in the worker,
after fork (a master that imported them makes ``subprocess`` fail in the worker).
"""
