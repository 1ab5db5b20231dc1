"""The interactive docs page: Swagger UI over the service's own OpenAPI document.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which
reads OpenAPI 3.1) and are served by the service itself under
``/_api/docs/static/``: no CDN, so the page works on air-gapped clusters. Every URL
is relative to ``--base-url``.

The page and its static files need no token (they hold nothing about the service);
the OpenAPI document and the endpoints do. A token reaches the page either from the
URL (``/_api/docs?token=…``: it is read once, removed from the address bar and
sent as ``Authorization: token …`` with every request the page makes) or from
Swagger UI's "Authorize" button (the document declares the ``token`` scheme).
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from jinja2 import Environment, select_autoescape

#: Swagger UI's static files, shipped in the wheel of swagger-ui-bundle-v2.
STATIC_DIR = Path(swagger_ui_bundle.swagger_ui_path)
STATIC_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})

_ENV = Environment(autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)

_PAGE = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} · API docs</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="{{ static }}/favicon-32x32.png">
<link rel="stylesheet" href="{{ static }}/swagger-ui.css">
</head><body>
<div id="swagger-ui"></div>
<script src="{{ static }}/swagger-ui-bundle.js"></script>
<script>
(function () {
  var url = new URL(window.location.href);
  var token = url.searchParams.get("token");
  if (token) {  // keep it out of the address bar, the history and Referer headers
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  window.ui = SwaggerUIBundle({
    url: {{ spec_url | tojson }},
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    persistAuthorization: false,
    requestInterceptor: function (request) {
      if (token && !request.headers.Authorization) {
        request.headers.Authorization = "token " + token;
      }
      return request;
    },
  });
})();
</script>
</body></html>
"""
)


def render_docs_page(title: str, base: str = "") -> str:
    """The HTML of ``/_api/docs`` for a service mounted at ``base`` (``""`` or ``/prefix``)."""
    return _PAGE.render(title=title, static=f"{base}/_api/docs/static", spec_url=f"{base}/openapi.json")
