"""Where the bundled demo lives: $MIMMIA_ASSETS if set, else the `mimmia_assets` package
(the repository's assets/ folder in a checkout, package data in an installed wheel)."""
import os
from importlib import resources
from pathlib import Path

ENV = "MIMMIA_ASSETS"


def assets_dir() -> Path:
    """The folder holding demo/ (models, data, manifest, bundled scores)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    try:
        return Path(str(resources.files("mimmia_assets")))
    except ModuleNotFoundError:  # run from a source tree that was not installed
        return Path(__file__).resolve().parent.parent / "assets"


DEMO_DIR = assets_dir() / "demo"

__all__ = ["assets_dir", "DEMO_DIR", "ENV"]
