"""Helpers for the hostile-input tests: the canary runner and shared constants."""
