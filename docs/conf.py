"""Sphinx configuration for the scaler documentation.

Needs nothing but Sphinx itself (``pip install sphinx``; it is not a dependency of scaler):

    sphinx-build -b html docs docs/_build/html
"""

import os
import re

project = "scaler"
author = "the scaler authors"
copyright = "the scaler authors"


def _version():
    # Read the version without importing the package, so building the docs needs nothing installed.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scaler", "version.py")
    try:
        with open(path) as f:
            match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read())
    except OSError:
        match = None
    return match.group(1) if match else "unknown"


release = _version()
version = ".".join(release.split(".")[:2])

extensions = []
master_doc = "index"  # Sphinx < 4 name
root_doc = "index"
source_suffix = ".rst"
exclude_patterns = ["_build"]
pygments_style = "sphinx"
html_theme = "alabaster"  # ships with Sphinx
html_static_path = []
