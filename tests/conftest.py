"""Shared test helpers: float64 references, finite differences, torch."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
