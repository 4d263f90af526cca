"""The config file: the SPEC example loads as written; every error names its key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLE_CONFIG, REPO

from extauthz import config as config_mod
from extauthz.errors import ConfigError

SPEC = REPO.parent / "shared" / "SPEC.md"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE_CONFIG.read_text())


def test_example_is_the_spec_example_verbatim() -> None:
    """examples/config.yaml is exactly the example of SPEC §5 (when the SPEC is beside us)."""
    if not SPEC.exists():
        pytest.skip("SPEC.md is not beside this checkout")
    text = SPEC.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert EXAMPLE_CONFIG.read_text() == block


def test_example_loads_with_the_values_its_comments_state() -> None:
    config = config_mod.load(EXAMPLE_CONFIG)
    assert config.listen.grpc == "127.0.0.1:9001"
    assert config.listen.http == "127.0.0.1:9090"
    assert config.decryption.keys[0].path == REPO / "examples" / "keys" / "decrypt"  # type: ignore[union-attr]
    assert config.decryption.required is False
    assert config.decryption.key_algorithms == config_mod.DEFAULT_KEY_ALGORITHMS
    (provider,) = config.providers
    assert provider.issuer == "https://idp.example.test"
    assert provider.audiences == ("api://orders",)
    assert provider.algorithms == config_mod.DEFAULT_SIGNATURE_ALGORITHMS
    assert provider.leeway_seconds == 30
    assert provider.required_claims == ("exp", "sub")
    assert dict(provider.claims_to_headers) == {
        "sub": "x-auth-subject",
        "email": "x-auth-email",
        "scope": "x-auth-scope",
        "roles": "x-auth-roles",
    }
    assert [s.header or s.cookie for s in config.token.sources] == ["authorization", "access_token"]
    assert config.token.max_bytes == 16384
    assert config.upstream.authorization == "keep"
    assert [r.name for r in config.rules] == ["public", "admin"]
    assert config.rules[1].methods == ("POST", "PUT", "DELETE")
    assert dict(config.response.headers)["x-content-type-options"] == "nosniff"
    assert config.cache.max_entries == 10000
    assert config.logging.format == "json"


def test_defaults_when_sections_are_omitted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {"providers": [{"name": "p", "issuer": "https://i", "keys": [{"directory": "k"}]}]}
        )
    )
    config = config_mod.load(path)
    (source,) = config.token.sources
    assert (source.header, source.prefix) == ("authorization", "Bearer ")
    assert config.providers[0].keys[0].path == tmp_path / "k"  # type: ignore[union-attr]
    assert config.providers[0].keys[0].interval_seconds <= 2  # type: ignore[union-attr]
    assert config.token.realm == "extauthz"
    assert config.shutdown.drain_seconds == 3
    assert config.shutdown.grace_seconds == 10


def mutate(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(example())
    node: Any = data
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if value is DELETE:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


DELETE = object()

BAD = [
    ("apiVersion", "extauthz/v2", "apiVersion"),
    ("listen.grpc", "nope", "listen.grpc"),
    ("listen.colour", "blue", "listen.colour"),
    (
        "decryption.keys[0]",
        {"directory": "a", "kubernetes": {"secrets": ["x"]}},
        "decryption.keys[0]",
    ),
    ("decryption.keys[0]", {"jwks_uri": "https://x"}, "decryption.keys[0].jwks_uri"),
    ("decryption.keys[0]", {"kubernetes": {"namespace": "a"}}, "decryption.keys[0].kubernetes"),
    ("decryption.key_algorithms", ["RSA1_5"], "decryption.key_algorithms[0]"),
    ("decryption.key_algorithms", ["PBES2-HS256+A128KW"], "decryption.key_algorithms"),
    ("decryption.content_algorithms", ["A128GCM", "ROT13"], "decryption.content_algorithms[1]"),
    ("decryption.required", "yes", "decryption.required"),
    ("providers[0].issuer", None, "providers[0].issuer"),
    ("providers[0].audiences", "api://orders", "providers[0].audiences"),
    ("providers[0].algorithms", ["none"], "providers[0].algorithms[0]"),
    ("providers[0].algorithms", ["RS256", "HS1"], "providers[0].algorithms[1]"),
    ("providers[0].leeway_seconds", -1, "providers[0].leeway_seconds"),
    ("providers[0].claims_to_headers.sub", "X Bad", "providers[0].claims_to_headers.sub"),
    ("providers[0].claims_to_headers.sub", ":path", "providers[0].claims_to_headers.sub"),
    ("providers[0].keys", [], "providers[0].keys"),
    ("providers[0].keys[0]", {"jwks_uri": "http://idp"}, "providers[0].keys[0].jwks_uri"),
    ("providers[0].typo", 1, "providers[0].typo"),
    ("token.sources[0]", {"header": "authorization", "cookie": "a"}, "token.sources[0]"),
    ("token.max_bytes", "big", "token.max_bytes"),
    ("upstream.authorization", "drop", "upstream.authorization"),
    ("rules[0].path_regex", "([", "rules[0].path_regex"),
    ("rules[1].name", "public", "rules[1].name"),
    ("rules[1].require_claims", {"roles": []}, "rules[1].require_claims.roles"),
    ("response.headers", {"x-a": "b\r\nc: d"}, "response.headers.x-a"),
    ("logging.format", "xml", "logging.format"),
    ("cache.max_entries", 1.5, "cache.max_entries"),
]


@pytest.mark.parametrize(("path", "value", "where"), BAD, ids=[b[0] for b in BAD])
def test_errors_name_the_key_path(tmp_path: Path, path: str, value: Any, where: str) -> None:
    data = mutate(path, value)
    with pytest.raises(ConfigError) as info:
        config_mod.parse(data, tmp_path)
    assert info.value.path == where


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers: [\n  - {")
    with pytest.raises(ConfigError, match="line"):
        config_mod.load(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config_mod.load(tmp_path / "absent.yaml")
