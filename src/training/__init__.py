"""The open_mclip trainer: `torchrun -m training.main ...` (or `python -m training.main ...`)."""
