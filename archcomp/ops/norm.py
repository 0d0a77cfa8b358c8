"""Normalization and regularization: layer_norm, batch_norm, dropout."""

from __future__ import annotations
