"""The config file: the example loads as written; every error names its key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz import config as config_mod
from extauthz.errors import ConfigError
from tests.conftest import EXAMPLE_CONFIG, REPO


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE_CONFIG.read_text())


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
    # the commented-out lines state the defaults
    assert config.listen.http_authz is None
    assert config.listen.http_authz_path_prefix == ""
    assert config.upstream.strip_header_prefixes == ("x-auth-",)
    assert config.path_matching.case == "both"
    assert "strict-transport-security" not in dict(config.response.headers)
    assert config.revocation.sources == ()
    assert config.revocation.max_entries == 100000


def test_example_comments_hold_when_uncommented(tmp_path: Path) -> None:
    """The example's commented alternatives are valid keys with the values they show."""
    lines = []
    for line in EXAMPLE_CONFIG.read_text().splitlines():
        stripped = line.lstrip()
        if stripped.startswith("# http_authz") or stripped.startswith("# path_matching"):
            line = line.replace("# ", "", 1)
        lines.append(line)
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines))
    for sub in ("keys/decrypt", "keys/verify"):
        (tmp_path / sub).mkdir(parents=True)
    config = config_mod.load(path)
    assert config.listen.http_authz == "127.0.0.1:9002"
    assert config.listen.http_authz_path_prefix == ""
    assert config.path_matching.case == "both"


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
    ("decryption.keys[0]", {"jwks_uri": "https://x"}, "decryption.keys[0]"),
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
    ("listen.http_authz", "9002", "listen.http_authz"),
    ("listen.http_authz_path_prefix", "auth/", "listen.http_authz_path_prefix"),
    ("listen.http_authz_metadata", "no", "listen.http_authz_metadata"),
    ("path_matching.case", "insensitive", "path_matching.case"),
    ("providers[0].allow_unsigned_inner", True, "providers[0].allow_unsigned_inner"),
    ("providers[0].token_types", "at+jwt", "providers[0].token_types"),
    ("rules[0].require_scopes", ["read"], "rules[0].anonymous"),
    ("rules[0].require_claims", {"roles": "x"}, "rules[0].anonymous"),
    ("rules[0].path_regex", "(?<=a)b", "rules[0].path_regex"),
    ("rules[1].methods", "POST", "rules[1].methods"),
    ("rules[1].require_claims", {"roles": None}, "rules[1].require_claims.roles"),
    ("decryption.keys[0]", {"kubernetes": {"configmaps": ["x"]}}, "decryption.keys"),
    ("decryption.keys[0]", {"directory": "a", "extra": 1}, "decryption.keys[0].extra"),
    (
        "providers[0].keys[0]",
        {"jwks_uri": "https://idp/jwks", "ca_file": "absent.pem"},
        "providers[0].keys[0].ca_file",
    ),
    (
        "providers[0].keys[0]",
        {"jwks_uri": "https://idp/jwks", "refresh_min_seconds": 600, "refresh_max_seconds": 60},
        "providers[0].keys[0].refresh_max_seconds",
    ),
    (
        "revocation",
        {"sources": [{"kubernetes": {"namespace": "a"}}]},
        "revocation.sources[0].kubernetes",
    ),
    ("revocation", {"sources": [{"jwks_uri": "https://x"}]}, "revocation.sources[0]"),
    ("revocation.max_entries", 0, "revocation.max_entries"),
    ("listen.tls", {"cert_file": "absent.crt", "key_file": "absent.key"}, "listen.tls.cert_file"),
    (
        "providers[0].claims_to_headers.email",
        "x-auth-subject",
        "providers[0].claims_to_headers.email",
    ),
    (
        "providers[0].claims_to_headers.email",
        "authorization",
        "providers[0].claims_to_headers.email",
    ),
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


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    """Three independent mistakes: three errors, each with its key path."""
    data = mutate("listen.grpc", "nope")
    data["providers"][0]["leeway_seconds"] = "soon"
    data["rules"][1]["methods"] = "POST"
    with pytest.raises(config_mod.ConfigErrors) as info:
        config_mod.parse(data, tmp_path)
    paths = [e.path for e in info.value.errors]
    assert paths == ["listen.grpc", "providers[0].leeway_seconds", "rules[1].methods"]
    assert str(info.value).count("\n") == 2


def test_cross_checks_are_all_reported(tmp_path: Path) -> None:
    """Checks that need the whole file (duplicates, unknown providers) are collected too."""
    data = example()
    data["providers"].append(dict(data["providers"][0]))
    data["rules"][1]["providers"] = ["nobody"]
    with pytest.raises(config_mod.ConfigErrors) as info:
        config_mod.parse(data, tmp_path)
    paths = {e.path for e in info.value.errors}
    assert {"providers[1].name", "providers[1].issuer", "rules[1].providers[0]"} <= paths


def test_revocation_sources_default_to_configmaps(tmp_path: Path) -> None:
    data = example()
    data["revocation"] = {
        "sources": [
            {"kubernetes": {"namespace": "auth", "configmaps": ["extauthz-revoked"]}},
            {"kubernetes": {"namespace": "auth", "label_selector": "extauthz/revocation=true"}},
            {"kubernetes": {"namespace": "auth", "secrets": ["revoked"]}},
            {"directory": "./revoked"},
        ],
        "max_entries": 5,
    }
    config = config_mod.parse(data, tmp_path)
    named, selected, secret, directory = config.revocation.sources
    assert isinstance(named, config_mod.KubernetesSourceConfig)
    assert (named.kind, named.names) == ("configmap", ("extauthz-revoked",))
    assert isinstance(selected, config_mod.KubernetesSourceConfig)
    assert selected.kind == "configmap"
    assert isinstance(secret, config_mod.KubernetesSourceConfig)
    assert (secret.kind, secret.names) == ("secret", ("revoked",))
    assert isinstance(directory, config_mod.DirectorySourceConfig)
    assert directory.path == tmp_path / "revoked"


def test_new_keys_parse(tmp_path: Path) -> None:
    data = example()
    data["listen"]["http_authz"] = "127.0.0.1:9002"
    data["listen"]["http_authz_path_prefix"] = "/authz"
    data["listen"]["http_authz_metadata"] = False
    data["path_matching"] = {"case": "sensitive"}
    data["providers"][0]["allow_unsigned_inner"] = ["shared-2024"]
    data["providers"][0]["token_types"] = ["at+JWT", "JWT"]
    config = config_mod.parse(data, tmp_path)
    assert config.listen.http_authz == "127.0.0.1:9002"
    assert config.listen.http_authz_path_prefix == "/authz"
    assert config.listen.http_authz_metadata is False
    assert config.path_matching.case == "sensitive"
    assert config.providers[0].allow_unsigned_inner == ("shared-2024",)
    assert config.providers[0].token_types == ("at+jwt", "jwt")


def test_null_values_mean_the_default_except_in_requirements(tmp_path: Path) -> None:
    """`keys:` with every item commented out is the default; a null claim value is an error."""
    data = example()
    data["listen"]["http"] = None
    data["cache"] = None
    config = config_mod.parse(data, tmp_path)
    assert config.listen.http is None
    assert config.cache.max_entries == 10000


def test_jwks_defaults() -> None:
    """A withdrawn IdP key stops working within the hour by default."""
    source = config_mod.JwksSourceConfig(uri="https://idp/jwks")
    assert source.refresh_max_seconds == 3600
    assert source.refresh_min_seconds == 300


def test_json_schema_accepts_the_example_and_refuses_unknown_keys() -> None:
    """The generated schema describes the same file the model reads."""
    import jsonschema

    schema = config_mod.json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(example()))
    bad = example()
    bad["listen"]["colour"] = "blue"
    assert list(validator.iter_errors(bad))
    good = example()
    good["decryption"]["keys"].append({"kubernetes": {"namespace": "auth", "secrets": ["k"]}})
    good["revocation"] = {"sources": [{"kubernetes": {"configmaps": ["extauthz-revoked"]}}]}
    assert not list(validator.iter_errors(good))
    for change in (
        lambda d: d["decryption"]["keys"].append({"namespace": "auth", "secrets": ["k"]}),
        lambda d: d["providers"][0].update(algorithms=["none"]),
        lambda d: d["providers"][0]["claims_to_headers"].update({"a..b": "x-a"}),
        lambda d: d["providers"][0]["claims_to_headers"].update({"a": "X Bad"}),
    ):
        bad = example()
        change(bad)
        assert list(validator.iter_errors(bad)), bad
    assert schema["properties"]["providers"]["type"] == "array"
    assert "claims_to_headers" in schema["$defs"]["ProviderConfig"]["properties"]
