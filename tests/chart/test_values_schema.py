"""values.yaml and values.schema.json describe the same values, strictly, documented.

- the schema is strict: every object either lists its properties with
  `additionalProperties: false`, or is an explicit map (`additionalProperties: {schema}`);
- every key of values.yaml is in the schema and every schema property of an object that
  values.yaml spells out (a non-empty default outside lists) is in values.yaml, with
  agreeing types (under `config`, the service's own config file whose schema is
  generated, values.yaml shows the keys worth changing, not all of them);
- the `config` part is what `extauthz config schema` generates (tools/chart_schema.py);
- every key of values.yaml carries a `# --` doc comment (cert-manager style), except the
  entries of example lists and of free-form maps (annotations, headers, resources);
- values.yaml and the realistic value files validate against the schema.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.helmtest import CHART, REPO, VALUES_DIR

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
VALUES_TEXT = (CHART / "values.yaml").read_text(encoding="utf-8")
VALUES: dict[str, Any] = yaml.safe_load(VALUES_TEXT)

#: Helm's own namespace for parent charts' globals: its content is not ours to constrain
HELM_GLOBAL = "global"
#: the config file: its reference is `extauthz config schema`; values.yaml shows a subset
CONFIG = "config"

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref``."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = SCHEMA["$defs"][ref.removeprefix("#/$defs/")]
    return node


def types_of(node: dict[str, Any]) -> set[str]:
    """The JSON types a schema node admits (through oneOf/anyOf alternatives)."""
    node = resolve(node)
    for combinator in ("oneOf", "anyOf"):
        if combinator in node:
            return set().union(*(types_of(alt) for alt in node[combinator]))
    if "type" in node:
        declared = node["type"]
        return {declared} if isinstance(declared, str) else set(declared)
    if "const" in node:
        return {_json_type(node["const"])}
    if "enum" in node:
        return {_json_type(v) for v in node["enum"]}
    raise AssertionError(f"schema node without a type: {node}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    for name, python in JSON_TYPES.items():
        if name not in {"integer", "boolean"} and isinstance(value, python):
            return name
    raise AssertionError(f"not a JSON value: {value!r}")


def type_matches(value: Any, node: dict[str, Any]) -> bool:
    """Does ``value`` have one of the node's JSON types?"""
    allowed = types_of(node)
    kind = _json_type(value)
    return kind in allowed or (kind == "integer" and "number" in allowed)


def branch_for(value: Any, node: dict[str, Any]) -> dict[str, Any]:
    """The (resolved) alternative of a oneOf/anyOf node that ``value`` validates against."""
    node = resolve(node)
    for combinator in ("oneOf", "anyOf"):
        if combinator in node:
            for alternative in node[combinator]:
                wrapped = {"$defs": SCHEMA["$defs"], **resolve(alternative)}
                if jsonschema.Draft202012Validator(wrapped).is_valid(value):
                    return resolve(alternative)
            raise AssertionError(f"{value!r} matches no alternative of {node}")
    return node


def walk_schema(node: dict[str, Any], path: str, seen: set[int]) -> list[str]:
    """Paths of object nodes that are neither strict nor explicit maps."""
    problems: list[str] = []
    if id(node) in seen:
        return problems
    seen.add(id(node))
    node = resolve(node)
    is_object = node.get("type") == "object" or "properties" in node
    if is_object and path != HELM_GLOBAL:
        extra = node.get("additionalProperties")
        if "properties" in node and extra is not False:
            problems.append(f"{path}: properties without additionalProperties: false")
        is_map = isinstance(extra, dict) or ("patternProperties" in node and extra is False)
        if "properties" not in node and not is_map:
            problems.append(f"{path}: object with neither properties nor a map value schema")
    for key, child in node.get("properties", {}).items():
        problems += walk_schema(child, f"{path}.{key}".lstrip("."), seen)
    for pattern, child in node.get("patternProperties", {}).items():
        problems += walk_schema(child, f"{path}.<{pattern}>", seen)
    if isinstance(node.get("additionalProperties"), dict):
        problems += walk_schema(node["additionalProperties"], f"{path}.*", seen)
    if isinstance(node.get("items"), dict):
        problems += walk_schema(node["items"], f"{path}[]", seen)
    for combinator in ("oneOf", "anyOf", "allOf"):
        for index, alternative in enumerate(node.get(combinator, [])):
            problems += walk_schema(alternative, f"{path}<{combinator}{index}>", seen)
    return problems


def compare(value: Any, node: dict[str, Any], path: str, spelled_out: bool) -> list[str]:
    """Mismatches between a values.yaml subtree and its schema node.

    ``spelled_out``: the value is a default of values.yaml itself, not an item of a list
    (list items are examples and may leave optional properties out).
    """
    problems: list[str] = []
    if not type_matches(value, node):
        return [f"{path}: value {value!r} does not match schema types {sorted(types_of(node))}"]
    node = branch_for(value, node)
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        patterns = node.get("patternProperties", {})
        for key, child in value.items():
            child_path = f"{path}.{key}".lstrip(".")
            matching = [schema for pattern, schema in patterns.items() if re.search(pattern, key)]
            if key in properties:
                problems += compare(child, properties[key], child_path, spelled_out)
            elif matching:
                problems += compare(child, matching[0], child_path, spelled_out=False)
            elif isinstance(extra, dict):
                problems += compare(child, extra, child_path, spelled_out=False)
            else:
                problems.append(f"{child_path}: in values.yaml, not in values.schema.json")
        # an empty default ({}: "nothing set", e.g. affinity) documents its shape in the
        # schema only
        if spelled_out and value and path != HELM_GLOBAL and path.split(".")[0] != CONFIG:
            for key in properties:
                if key not in value:
                    where = f"{path}.{key}".lstrip(".")
                    problems.append(f"{where}: in the schema, not in values.yaml")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += compare(item, node.get("items", {}), f"{path}[{index}]", spelled_out=False)
    return problems


def test_schema_is_strict_at_every_object_level() -> None:
    """No object accepts unknown keys unless it is declared as a map."""
    seen: set[int] = set()
    problems = walk_schema(SCHEMA, "", seen)
    for name, definition in SCHEMA["$defs"].items():
        problems += walk_schema(definition, f"$defs.{name}", seen)
    assert problems == []


def test_values_yaml_and_schema_have_the_same_keys_and_types() -> None:
    """Every values.yaml key is in the schema and vice versa; the types agree."""
    assert compare(VALUES, SCHEMA, "", spelled_out=True) == []


def test_values_yaml_validates_against_its_schema() -> None:
    """The defaults are valid values."""
    jsonschema.Draft202012Validator(SCHEMA).validate(VALUES)


@pytest.mark.parametrize("path", sorted(VALUES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_realistic_value_files_validate_against_the_schema(path: Any) -> None:
    """The test value files use only documented keys (helm checks the merged values too)."""
    jsonschema.Draft202012Validator(SCHEMA).validate(
        yaml.safe_load(path.read_text(encoding="utf-8"))
    )


def _documented_keys() -> list[str]:
    """Key paths of values.yaml lacking a `# --` comment block right above them."""
    lines = VALUES_TEXT.splitlines()
    missing: list[str] = []

    def visit(node: yaml.Node, schema: dict[str, Any], path: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        schema = resolve(schema)
        properties = schema.get("properties", {})
        for key_node, value_node in node.value:
            key = key_node.value
            child_path = f"{path}.{key}".lstrip(".")
            child_schema = resolve(properties.get(key, {}))
            is_parent = "properties" in child_schema and isinstance(value_node, yaml.MappingNode)
            if not is_parent:  # a leaf, a list or a map: it must say what it is
                line = key_node.start_mark.line - 1
                block = []
                while line >= 0 and lines[line].lstrip().startswith("#"):
                    block.append(lines[line].strip())
                    line -= 1
                if not any(comment.startswith("# --") for comment in block):
                    missing.append(child_path)
            if is_parent:
                visit(value_node, child_schema, child_path)

    visit(yaml.compose(VALUES_TEXT), SCHEMA, "")
    return missing


def test_every_values_key_is_documented() -> None:
    """cert-manager style: a `# --` comment above every key."""
    assert _documented_keys() == []


def test_config_schema_is_the_generated_one() -> None:
    """values.schema.json's `config` is what `extauthz config schema` prints today, and
    the chart's alerts are docs/observability.md's (`python tools/chart_schema.py`
    rewrites both after a change)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "chart_schema.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
