"""Evaluation: validation loss and retrieval recall (`retrieval`), zero-shot classification per language
(`zero_shot`), and the `Evaluator` that runs them after each epoch."""

from .evaluator import Evaluator
from .zero_shot import ZeroShotPlan, zero_shot_plan

__all__ = ["Evaluator", "ZeroShotPlan", "zero_shot_plan"]
