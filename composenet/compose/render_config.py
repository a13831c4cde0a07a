"""Render ``Project.document`` for `composenet config` (YAML or JSON), or the ignored key paths.

Owns: the text form of the normalised document. ``$`` in values is written ``$$`` so that the
output, loaded again, gives the same document (interpolation already happened). Pure.
Must not: change the document (modelbuild.py wrote it) or print (the CLI does).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from composenet.compose.yamlspec import Dumper
from composenet.core.model import Project


def escape_dollars(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: escape_dollars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_dollars(v) for v in value]
    return value


def render_config(project: Project, fmt: str = "yaml", ignored: bool = False) -> str:
    data: Any = list(project.ignored) if ignored else escape_dollars(project.document)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if ignored and not data:
        return ""
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
