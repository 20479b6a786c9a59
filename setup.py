"""Build script: metadata lives in pyproject.toml; this file is where compiled
extensions are declared (setuptools needs code for OpenMP detection and flags)."""
from setuptools import setup

setup()
