"""Package data, not code: the shipped backbone and default model.

The top-level ``weights/`` folder of the source tree is installed as the package
``busi_lite.weights`` (see pyproject.toml ``[tool.setuptools.package-dir]``), so the
files are found next to the installed package, never in the current directory. Use
:func:`busi_lite.resources.resolve` to find them. Licences and provenance: ``NOTICE``.
"""
