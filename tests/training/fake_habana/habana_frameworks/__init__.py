"""A CPU stand-in for Intel Gaudi's PyTorch bridge that records what the trainer asks of it (see README.md)."""
