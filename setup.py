"""Packaging for cloudmesh-transfer: the `cms transfer` plugin and its Python API."""
from pathlib import Path

from setuptools import find_namespace_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "cloudmesh" / "transfer" / "__version__.py").read_text(), version)

setup(
    name="cloudmesh-transfer",
    version=version["version"],
    description="Copy and move files and folders between AWS S3, Azure Blob Storage and local disk",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # The checkout's root as the package root, and the `cloudmesh` namespace among the packages: the
    # wheel is the same, but setuptools' default editable install (`pip install -e .`) becomes a path
    # entry instead of an import finder, so that cmd5's shell, which finds plugins by walking the
    # namespace's folders, finds `transfer` (see README, "Installing").
    package_dir={"": "."},
    packages=find_namespace_packages(include=["cloudmesh", "cloudmesh.transfer", "cloudmesh.transfer.*"]),
    package_data={"cloudmesh.transfer.service": ["openapi.yaml", "ui/*.*", "ui/vendor/*"]},
    install_requires=[
        line.strip()
        for line in (here / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ],
    extras_require={"test": ["pytest>=8", "moto[server]>=5.0", "mongomock>=4.1", "schemathesis>=4.0",
                             "openapi-spec-validator>=0.7", "azure-storage-extensions>=0.1"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3.11",
    ],
)
