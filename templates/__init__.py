"""Jinja2 templates that nb2svc renders into service bundles (shipped as package data)."""
