"""archcomp's version, read from the installed package's metadata (pyproject.toml is its source)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("archcomp")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
