"""Suite-wide settings: hypothesis draws the same examples in `make test` (profile ``ci``, derandomized,
selected by ``OSERVE_HYPOTHESIS_PROFILE=ci``) so a landing never hinges on a new random draw; plain
``pytest`` runs keep hypothesis's random exploration, which is how the property tests find new cases."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("OSERVE_HYPOTHESIS_PROFILE", "default"))
