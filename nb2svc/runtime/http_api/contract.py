"""Requests checked against their endpoint's declared contract before a kernel is leased.

A request that breaks the contract answers 400 with every violation and never reaches a
kernel, so a bad request costs no kernel time. One that keeps it gets ``PARAMS``: its
path parameters and declared query arguments read as their types, defaults filled in,
and the validated JSON body (with its defaults) under ``PARAMS["body"]``. ``REQUEST``
itself is left byte for byte as Kernel Gateway sends it.

The 400 body::

    {"error": "BadRequest", "reason": "Bad Request",
     "message": "GET /orders: /qty: 0 is less than the minimum of 1",
     "errors": [{"pointer": "/qty", "expected": "minimum 1", "got": 0,
                 "message": "0 is less than the minimum of 1"}, ...]}

The rules (reading text as types, defaults, a missing body) are
:mod:`nb2svc.compiler.validation`'s, the same the compiler applies to examples.
Validators are built once per worker, when the service starts; a service none of whose
endpoints declares a contract does not even import the validator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from flask import Request, Response

from nb2svc.compiler.spec import Endpoint, ServiceSpec
from nb2svc.runtime.auth import json_error
from nb2svc.runtime.http_api.kg_compat import path_params as kg_path_params
from nb2svc.runtime.kernel.invoke import RequestPayload


class Contracts:
    """The compiled contracts of one service's endpoints."""

    def __init__(self, spec: ServiceSpec) -> None:
        self._by_endpoint: dict[tuple[str, str], Any] = {}
        declared = [ep for ep in spec.endpoints if ep.contract]
        if declared:
            from nb2svc.compiler.validation import Contract

            for ep in declared:
                contract = Contract(ep.contract, ep.params)
                if contract.checks_request:
                    self._by_endpoint[ep.method, ep.path] = contract

    def apply(
        self, endpoint: Endpoint, req: Request, path_params: Mapping[str, str], payload: RequestPayload
    ) -> Response | RequestPayload:
        """Check ``req``: a 400 response when it breaks the contract, else ``payload`` with
        ``params``, what the cell receives as ``PARAMS``."""
        contract = self._by_endpoint.get((endpoint.method, endpoint.path))
        path_params = kg_path_params(req.environ, path_params)  # as REQUEST["path"] has them
        if contract is None:
            return replace(payload, params=path_params)
        body, has_body, json_body = None, False, False
        if "body" in contract.schemas:
            data = req.get_data(cache=True)
            mimetype = req.mimetype or ""
            has_body = bool(data)
            json_body = mimetype == "application/json" or mimetype.endswith("+json")
            if has_body and json_body:
                body = json.loads(data)  # build_payload parsed it already: a bad one was a 400 there
        args = {name: req.args.getlist(name) for name in req.args}
        checked = contract.check_request(
            path_params, args, req.headers, body, has_body=has_body, json_body=json_body
        )
        if checked.errors:
            first = checked.errors[0]
            more = f" (and {len(checked.errors) - 1} more)" if len(checked.errors) > 1 else ""
            message = f"{endpoint.method} {endpoint.path}: {first['pointer']}: {first['message']}{more}"
            return json_error(400, "BadRequest", message, errors=checked.errors)
        return replace(payload, params=checked.params)


__all__ = ["Contracts"]
