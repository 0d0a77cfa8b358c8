"""Shape ops: flatten, reshape, transpose, permute, index, concat, split, matmul, scale."""

from __future__ import annotations
