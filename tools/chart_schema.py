"""Write the chart's generated files: ``values.schema.json``'s ``config`` part, from the
config file's JSON Schema, and ``alerts/extauthz.yaml``, from docs/observability.md.

The chart's ``config`` value IS the extauthz config file (minus ``apiVersion`` and
``listen``, which the chart writes from ``transport``, ``ports`` and ``tls``), so its
schema is not written by hand: it is the one ``extauthz config schema`` prints, with
these mechanical changes:

- its ``$defs`` are renamed ``config<Name>`` (the chart schema has ``$defs`` of its own)
  and unused ones dropped;
- ``format: path`` is dropped (a path on the pod is not a path on the machine that runs
  ``helm``; the chart checks ``ca_file`` against its mounts instead);

(The generated schema already closes pattern-keyed maps and describes Kubernetes key
sources inside their ``kubernetes:`` wrapper, as the file writes them.)

The PrometheusRule's alerts are the ones docs/observability.md documents: its
``PrometheusRule`` YAML block's ``spec`` is copied, as text, into the chart file that the
``prometheusRule`` template renders.

Usage::

    python tools/chart_schema.py          # rewrite both files
    python tools/chart_schema.py --check  # exit 1 when a committed file is stale
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VALUES_SCHEMA = ROOT / "charts" / "extauthz" / "values.schema.json"
ALERTS = ROOT / "charts" / "extauthz" / "alerts" / "extauthz.yaml"
OBSERVABILITY = ROOT / "docs" / "observability.md"
ALERTS_HEADER = (
    "# The alerts of docs/observability.md, rendered as the PrometheusRule's `spec` when\n"
    "# prometheusRule.enabled. Written by tools/chart_schema.py: edit the page, not this.\n"
)

#: keys of the config file the chart sets itself
CHART_OWNED = ("apiVersion", "listen")
PREFIX = "config"
DESCRIPTION = (
    "The extauthz config file (generated from `extauthz config schema` by "
    "tools/chart_schema.py); `apiVersion` and `listen` are set by the chart."
)


def generated_schema() -> dict[str, Any]:
    """The JSON Schema the installed extauthz prints for its config file."""
    result = subprocess.run(
        [sys.executable, "-m", "extauthz", "config", "schema"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT,
    )
    schema: dict[str, Any] = json.loads(result.stdout)
    return schema


def _walk(node: Any, visit: Any) -> Any:
    """Rebuild ``node`` bottom-up, applying ``visit`` to every object."""
    if isinstance(node, dict):
        return visit({key: _walk(value, visit) for key, value in node.items()})
    if isinstance(node, list):
        return [_walk(item, visit) for item in node]
    return node


def _renamed(ref: str) -> str:
    name = ref.removeprefix("#/$defs/")
    return f"#/$defs/{PREFIX}{name}"


def _clean(node: dict[str, Any]) -> dict[str, Any]:
    out = dict(node)
    if "$ref" in out:
        out["$ref"] = _renamed(out["$ref"])
    if out.get("format") == "path":
        del out["format"]
    out.pop("title", None)
    return out


def _refs(node: Any) -> set[str]:
    found: set[str] = set()

    def visit(item: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in item:
            found.add(item["$ref"].removeprefix("#/$defs/"))
        return item

    _walk(node, visit)
    return found


def merged(values_schema: dict[str, Any], config_schema: dict[str, Any]) -> dict[str, Any]:
    """``values_schema`` with its ``config`` property (and the $defs it uses) replaced."""
    out = copy.deepcopy(values_schema)
    defs: dict[str, Any] = {
        key: value for key, value in out.get("$defs", {}).items() if not key.startswith(PREFIX)
    }
    for name, definition in config_schema.get("$defs", {}).items():
        defs[f"{PREFIX}{name}"] = _walk(definition, _clean)
    properties = {
        key: _walk(value, _clean)
        for key, value in config_schema["properties"].items()
        if key not in CHART_OWNED
    }
    config: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "description": DESCRIPTION,
        "properties": properties,
    }
    required = [key for key in config_schema.get("required", []) if key not in CHART_OWNED]
    if required:
        config["required"] = required
    out["properties"]["config"] = config
    # keep only the $defs something still uses (the chart's own, or the config's)
    used: set[str] = set()
    todo = _refs(out["properties"])
    while todo:
        name = todo.pop()
        if name in used or name not in defs:
            continue
        used.add(name)
        todo |= _refs(defs[name])
    out["$defs"] = {key: defs[key] for key in sorted(defs) if key in used}
    return out


def render() -> str:
    """The values.schema.json text this tool writes."""
    current = json.loads(VALUES_SCHEMA.read_text(encoding="utf-8"))
    return json.dumps(merged(current, generated_schema()), indent=2) + "\n"


def render_alerts(page: str) -> str:
    """The ``spec`` of the page's PrometheusRule block, dedented, under a header."""
    section = page[page.index("### Alerts") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    if match is None:
        raise SystemExit(f"{OBSERVABILITY.relative_to(ROOT)}: no yaml block under ### Alerts")
    lines = match.group(1).splitlines()
    spec = lines.index("spec:")
    body = [line.removeprefix("  ") for line in lines[spec + 1 :]]
    return ALERTS_HEADER + "\n".join(body).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated files, or with ``--check`` report whether they are current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    wanted = {
        VALUES_SCHEMA: render(),
        ALERTS: render_alerts(OBSERVABILITY.read_text(encoding="utf-8")),
    }
    stale = [path for path, text in wanted.items() if path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(
                f"{path.relative_to(ROOT)} is stale: run python tools/chart_schema.py",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
