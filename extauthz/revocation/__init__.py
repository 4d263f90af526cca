"""Token revocation: lists of revoked tokens, watched like keys, checked on every Check."""
