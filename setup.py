"""Only the package list lives here; everything else is in pyproject.toml.

pyproject.toml cannot combine automatic discovery (``packages.find``) with an extra
package mapped from another folder, and busi-lite needs both: every ``busi_lite.*``
subpackage, plus ``busi_lite.weights``, which pyproject's ``package-dir`` maps to the
top-level ``weights/`` folder (the shipped backbone and default model live there).
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["busi_lite", "busi_lite.*"]) + ["busi_lite.weights"])
