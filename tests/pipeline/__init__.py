"""Tests of the decision pipeline (``extauthz.pipeline``), driven without a server."""
