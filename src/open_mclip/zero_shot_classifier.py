"""open_clip's module name for the zero-shot classifier builders, which live in `zero_shot.py`."""

from .zero_shot import build_zero_shot_classifier, build_zero_shot_classifier_legacy

__all__ = ["build_zero_shot_classifier", "build_zero_shot_classifier_legacy"]
