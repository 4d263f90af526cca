"""Hypothesis profiles of the hardening fuzz tests (a helper module, not tests).

``HYPOTHESIS_PROFILE=ci`` (the default, part of ``make test``: 150 examples per
property, seconds in all) or ``HYPOTHESIS_PROFILE=long`` (the documented longer run,
20 000 examples per property; see docs/security.md)::

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/hardening -k fuzz -q

The profile is applied per test with the :data:`FUZZ` decorator, never loaded
globally, so it changes nothing for other suites in the same session.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # CPU per Check is asserted by the tests themselves
    "database": None,  # no example database written into the work tree
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("hardening-ci", max_examples=150, **_COMMON)
settings.register_profile("hardening-long", max_examples=20_000, **_COMMON)

#: the profile name asked for: ``ci`` (default) or ``long``
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
FUZZ = settings(settings.get_profile("hardening-long" if PROFILE == "long" else "hardening-ci"))
