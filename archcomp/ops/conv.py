"""Convolutions: conv1d, conv2d."""

from __future__ import annotations
