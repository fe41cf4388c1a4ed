"""The fake `habana_frameworks.torch` package: importing it loads nothing (the submodules do the work)."""
