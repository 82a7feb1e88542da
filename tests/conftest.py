"""Shared fixtures. Area-specific fixtures live in their own modules and are imported here."""

from __future__ import annotations

import os
import sys

# Tests import helpers (models.py, oprefs.py) from this directory.
sys.path.insert(0, os.path.dirname(__file__))
