"""Compose files -> ``core.model.Project``: read with positions, interpolate, merge, validate.

Layer: above ``core`` (it builds the model the core plans from), below ``kernel``, ``pipeline``
and ``cli``. Must not: touch the kernel, write files, or print; every problem it finds becomes a
located ``errors.Problem``. Entry point: ``compose.project.load_project(LoadOptions)``.
"""
