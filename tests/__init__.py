"""Tests of extauthz (an importable package: fakes and harnesses are shared)."""
