"""``extauthz serve --dev``: a self-contained service with ephemeral in-memory keys.

For trying extauthz out on a laptop: no config, no files. It prints a ready-to-use
nested token (RSA-OAEP-256 + A256GCM around an RS256 JWT) valid for one hour.
"""

from __future__ import annotations

from extauthz import logging as logging_mod
from extauthz import mint
from extauthz.config import Config, ListenConfig, ProviderConfig
from extauthz.keys.keyset import DECRYPTION, provider_purpose
from extauthz.keys.material import key_from_jwk
from extauthz.keys.sources.static import StaticSource

DEV_ISSUER = "https://dev.extauthz.invalid"
DEV_AUDIENCE = "dev"


def dev_config(grpc: str) -> Config:
    """The dev-mode config: one provider, claim headers for sub/scope, loopback only."""
    return Config(
        listen=ListenConfig(grpc=grpc),
        providers=(
            ProviderConfig(
                name="dev", issuer=DEV_ISSUER, audiences=(DEV_AUDIENCE,),
                keys=(), claims_map={"sub": "x-auth-subject", "scope": "x-auth-scope"},
            ),
        ),
    )  # fmt: skip


def run_dev(grpc: str) -> int:
    """Generate keys, print a token, serve until SIGTERM/SIGINT."""
    from extauthz.server.app import App

    logging_mod.configure("info", "console")
    enc = key_from_jwk(mint.generate_jwk("enc", "RSA-OAEP-256", "dev-enc"), "dev")
    sig = key_from_jwk(mint.generate_jwk("sig", "RS256", "dev-sig"), "dev")
    config = dev_config(grpc)
    app = App(config)
    app.store.attach(DECRYPTION, StaticSource([enc], "dev decryption key")).publish([enc])
    app.store.attach(provider_purpose("dev"), StaticSource([sig], "dev signing key")).publish([sig])
    claims = mint.claims_for(DEV_ISSUER, DEV_AUDIENCE, "dev-user", ttl=3600,
                             extra={"scope": "read write"})  # fmt: skip
    token = mint.encrypt(mint.sign(claims, sig), enc)
    print(f"\nextauthz dev mode on {grpc} (ephemeral keys; issuer {DEV_ISSUER})\n")
    print(f"TOKEN={token}\n")
    print(f'extauthz check --address {grpc} --token "$TOKEN"\n', flush=True)
    return app.run()
