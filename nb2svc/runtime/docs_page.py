"""A self-contained HTML docs page (no CDN: it must work on air-gapped clusters)."""

from __future__ import annotations

from jinja2 import Environment, select_autoescape

from nb2svc.compiler.spec import ServiceSpec

_ENV = Environment(autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)

_PAGE = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ spec.name }} API</title>
<style>
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font-family:ui-monospace,monospace;background:#f4f4f4;border-radius:4px}
pre{padding:.6rem;overflow:auto}.m{font-weight:bold;padding:.1rem .4rem;border-radius:3px;color:#fff}
.GET{background:#2b7de9}.POST{background:#2e9d4f}.PUT{background:#c77d00}.DELETE{background:#c0392b}
.PATCH{background:#7d3c98}section{border-top:1px solid #ddd;padding:.6rem 0}
</style></head><body>
<h1>{{ spec.name }}</h1>
<p>Compiled from <code>{{ spec.notebook }}</code> ({{ spec.kernel.name }} kernel).
Machine-readable: <a href="{{ base }}/openapi.json">OpenAPI 3</a>,
<a href="{{ base }}/_api/spec/swagger.json">Swagger 2 (Kernel Gateway)</a>.</p>
{% for ep in spec.endpoints %}
<section><h2><span class="m {{ ep.method }}">{{ ep.method }}</span> <code>{{ base }}{{ ep.path }}</code></h2>
{% if ep.summary %}<p><strong>{{ ep.summary }}</strong></p>{% endif %}
{% if ep.description %}<p>{{ ep.description }}</p>{% endif %}
<p>Cells {{ ep.cells | join(", ") }}{% if ep.response_info %}; ResponseInfo in cells
{{ ep.response_info.cells | join(", ") }}{% endif %}.</p></section>
{% endfor %}
</body></html>
"""
)


def render_docs_page(spec: ServiceSpec, base: str = "") -> str:
    return _PAGE.render(spec=spec, base=base)
