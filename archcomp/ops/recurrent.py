"""Recurrent layers: rnn, lstm, gru."""

from __future__ import annotations
