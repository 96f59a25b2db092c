"""twt — distil several teachers' reasoning into a small student that answers with far fewer tokens."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("twt")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
