"""Attention: multi-head attention and scaled dot-product attention."""

from __future__ import annotations
