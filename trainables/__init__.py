"""What runs on a worker: datasets, models, the training loop, KD, teachers and students."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kdsweep")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
