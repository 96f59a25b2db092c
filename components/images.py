"""The images the components run on: ``ghcr.io/twt-project/twt-{cpu,gpu}:<package version>``.

The tag is the version of the installed ``twt`` package (``twt.__version__``, from ``pyproject.toml``), so a
pipeline compiled from version X runs on the images built from version X (images/README.md).
``pipelines.release.check_images`` refuses a compiled spec whose tags differ. Only the standard library is
imported here: component modules import these names at module level.
"""

from importlib.metadata import PackageNotFoundError, version

REGISTRY = "ghcr.io/twt-project"


def package_version() -> str:
    """The installed twt version (the same lookup as ``twt.__version__``)."""
    try:
        return version("twt")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


VERSION = package_version()
CPU_IMAGE = f"{REGISTRY}/twt-cpu:{VERSION}"
GPU_IMAGE = f"{REGISTRY}/twt-gpu:{VERSION}"
