"""Compose files -> ``core.model.Project``: read with positions, interpolate, merge, validate.

Layer: above ``core`` (it builds the model the core plans from), below ``kernel``, ``pipeline``
and ``cli``. Must not: touch the kernel, write files, or print; every problem it finds becomes a
located ``errors.Problem``. Entry point: ``compose.project.load_project(LoadOptions)``.

Modules, in the order a load uses them:

- options.py        LoadOptions (the global CLI flags) and the project-name check;
- project.py        the stages in order: which files, environment, include, extends, profiles;
- load.py           one file -> a positioned tree (ytree.py: YMap/YList), by the reference
                    parser or the libyaml fast path (fastyaml.py), both by yamlspec.py's rules;
- interpolate.py    ``${VAR}`` in values, and the dotenv format;
- merge.py          several documents -> one (``-f``, extends, include);
- schema.py         the JSON schema, located;
- modelbuild.py     the document -> model networks and services, values parsed by values.py
                    and ports.py;
- validate.py       checks across services and networks;
- render_config.py  the normalised document as `composenet config` prints it.
"""
