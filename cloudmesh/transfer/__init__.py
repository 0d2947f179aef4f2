"""cloudmesh-transfer: copy and move files and folders between AWS S3, Azure Blob and local disk.

`Transfer` is imported when first asked for, so that a subcommand that does not need the engine
(or a module of this package imported on its own) does not load it."""
from cloudmesh.transfer.__version__ import version as __version__
from cloudmesh.transfer.errors import TransferError

__all__ = ["Transfer", "TransferError", "__version__"]


def __getattr__(name: str):
    if name == "Transfer":
        from cloudmesh.transfer.api import Transfer
        return Transfer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
