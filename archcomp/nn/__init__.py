"""torch.nn modules that ops lower to where torch has none (imported lazily, only by lowerings)."""
