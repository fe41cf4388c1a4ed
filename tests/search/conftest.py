"""Fixtures of the open_mclip.search tests: small saved models to index and query with."""

from search_support import other_model_dir, tiny_model_dir  # noqa: F401
