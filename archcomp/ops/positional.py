"""Positional encodings: sinusoidal and learned."""

from __future__ import annotations
