#!/usr/bin/env bash
# Set up the reference server (Jupyter Kernel Gateway 3.0.1) and the load generator (wrk)
# for bench/api_bench.py.
#
# Why a separate virtualenv: KG 3 pulls in jupyter_server/tornado and pins of its own;
# keeping it out of the system site-packages means the nb2svc stack (gunicorn/gevent/
# flask) and the reference never share or fight over dependencies, and the reference's
# kernel is the ipykernel from its own venv (kernelspec "python3" of bench/.venv-kg).
#
# Idempotent: every step is skipped when its result is already in place.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-kg"
KG_VERSION="3.0.1"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup_reference] %s\n' "$*"; }

# 1. virtualenv
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
else
    log "virtualenv exists: $VENV"
fi

# 2. jupyter-kernel-gateway + ipykernel in the venv
have_kg="$("$VENV/bin/python" - <<'PY' 2>/dev/null || true
from importlib.metadata import version, PackageNotFoundError
try:
    print(version("jupyter_kernel_gateway"), version("ipykernel"))
except PackageNotFoundError:
    pass
PY
)"
if [[ "$have_kg" == "$KG_VERSION "* ]]; then
    log "already installed: jupyter-kernel-gateway/ipykernel $have_kg"
else
    log "installing jupyter-kernel-gateway==$KG_VERSION and ipykernel"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "jupyter-kernel-gateway==$KG_VERSION" ipykernel
fi

# The kernelspec "python3" must resolve to the venv's own ipykernel: ipykernel ships it in
# <venv>/share/jupyter/kernels/python3 and jupyter's data path puts sys.prefix first.
log "kernelspecs seen by the reference:"
"$VENV/bin/jupyter" kernelspec list

# 3. wrk
if command -v wrk >/dev/null 2>&1; then
    log "wrk present: $(command -v wrk)"
else
    SUDO=""
    if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
    if ! $SUDO apt-get install -y wrk >/dev/null 2>&1; then
        log "wrk not installable from current package lists; running apt-get update"
        $SUDO apt-get update -qq
        $SUDO apt-get install -y wrk
    fi
    log "wrk installed: $(command -v wrk)"
fi

log "done"
