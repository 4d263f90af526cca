"""extauthz: an Envoy external-authorization service that decrypts JWE and verifies JWTs."""

__version__ = "0.1.0"
