"""cloudmesh-transfer: copy and move files and folders between AWS S3, Azure Blob and local disk."""
from cloudmesh.transfer.__version__ import version as __version__
from cloudmesh.transfer.api import Transfer
from cloudmesh.transfer.errors import TransferError

__all__ = ["Transfer", "TransferError", "__version__"]
