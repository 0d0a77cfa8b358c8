"""Pooling: max/avg pooling (1d, 2d) and adaptive pooling."""

from __future__ import annotations
