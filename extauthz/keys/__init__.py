"""Keys: parsing key material, immutable snapshots, and the sources that feed them."""
