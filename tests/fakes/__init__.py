"""Test doubles shared by the unit, integration and pytester tests."""

from __future__ import annotations
