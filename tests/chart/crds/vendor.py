"""Vendor the custom-resource validators of three npm packages into this directory.

The examples and the chart render Gateway API, Istio and prometheus-operator resources.
Their schemas come from npm's `@kubernetes-models/*` packages, which ship each CRD's
OpenAPI schema compiled into a standalone validator module (`_schemas/<Type>.js`).
This script fetches the pinned package versions once with `npm pack` and copies, for
each resource kind the tests validate, its validator module and every module it
imports, verbatim, into `node_modules/` here (with the package's `package.json` and
`LICENSE`). `validate.mjs` then runs them under Node.js.

The validators import one helper package, `@kubernetes-models/validate`, for their
string formats (`int32`, `date-time`, ...); the real one pulls in ajv and its format
plugins. `node_modules/@kubernetes-models/validate/` here is a small stand-in written
for these tests that implements just the formats the vendored modules use (see its
`index.js`); every structural rule (types, required fields, enums, patterns, limits)
is the packages' own.

Run: `python tests/chart/crds/vendor.py` (needs npm and network; the result is
committed, so the tests need only `node`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"

#: package -> (version, the _schemas modules the tests validate against)
PACKAGES: dict[str, tuple[str, list[str]]] = {
    "@kubernetes-models/gateway-api": (
        "2.0.0",
        [
            "IoK8sSigsGatewayApiApisV1Gateway",
            "IoK8sSigsGatewayApiApisV1HTTPRoute",
            "IoK8sSigsGatewayApiApisV1ReferenceGrant",
            "IoK8sSigsGatewayApiApisV1beta1ReferenceGrant",
        ],
    ),
    "@kubernetes-models/istio": ("3.0.1", ["SecurityIstioIoV1AuthorizationPolicy"]),
    "@kubernetes-models/prometheus-operator": (
        "6.0.0",
        [
            "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1ServiceMonitor",
            "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1PrometheusRule",
        ],
    ),
    # imported by the modules above (ObjectMeta, core/v1 selectors and friends)
    "@kubernetes-models/apimachinery": ("3.0.2", []),
    "kubernetes-models": ("5.1.0", []),
}

_IMPORT = re.compile(r'\b(?:import|export)\s*[\w*{}\s,$]*?\s*from\s*"([^"]+)"')


def npm_pack(package: str, version: str, into: Path) -> Path:
    """`npm pack` one package version, unpacked; returns its `package/` directory."""
    subprocess.run(
        ["npm", "pack", f"{package}@{version}", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    stem = package.removeprefix("@").replace("/", "-")
    (tgz,) = into.glob(f"{stem}-{version}.tgz")
    target = into / stem
    with tarfile.open(tgz) as archive:
        archive.extractall(target, filter="data")
    return target / "package"


def closure(roots: dict[str, Path], wanted: dict[str, list[str]]) -> dict[str, set[str]]:
    """package -> the `_schemas/*.js` modules needed, following imports across packages."""
    needed: dict[str, set[str]] = {name: set() for name in roots}
    todo = [(pkg, f"_schemas/{mod}.js") for pkg, mods in wanted.items() for mod in mods]
    while todo:
        pkg, rel = todo.pop()
        if rel in needed[pkg]:
            continue
        needed[pkg].add(rel)
        text = (roots[pkg] / rel).read_text(encoding="utf-8")
        for spec in _IMPORT.findall(text):
            if spec.startswith("./"):
                todo.append((pkg, str(Path(rel).parent / spec[2:])))
            elif "/_schemas/" in spec:
                other, _, sub = spec.partition("/_schemas/")
                sub = f"_schemas/{sub}"
                todo.append((other, sub if sub.endswith(".js") else f"{sub}.js"))
            elif spec != "@kubernetes-models/validate" and not spec.startswith(
                "@kubernetes-models/validate/runtime/"
            ):
                raise SystemExit(f"{pkg}/{rel}: unexpected import {spec}")
    return needed


def main() -> int:
    """Fetch, compute the closure, write node_modules/ (the validate stand-in is kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        roots = {
            name: npm_pack(name, version, Path(tmp)) for name, (version, _) in PACKAGES.items()
        }
        needed = closure(roots, {name: mods for name, (_, mods) in PACKAGES.items()})
        for name, root in roots.items():
            target = MODULES / name
            shutil.rmtree(target, ignore_errors=True)
            (target / "_schemas").mkdir(parents=True)
            for meta in ("package.json", "LICENSE"):
                shutil.copy2(root / meta, target / meta)
            for rel in sorted(needed[name]):
                shutil.copy2(root / rel, target / rel)
            print(f"{name}@{PACKAGES[name][0]}: {len(needed[name])} modules")

    manifest = {name: version for name, (version, _) in PACKAGES.items()}
    (HERE / "VERSIONS.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
