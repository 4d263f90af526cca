"""Key sources. Each third-party client is imported in exactly one module here."""
