"""open_clip's ImageNet metadata names: `IMAGENET_CLASSNAMES` (1000 names in class order) and the prompt templates
`OPENAI_IMAGENET_TEMPLATES` (OpenAI's 80) and `SIMPLE_IMAGENET_TEMPLATES` (OpenAI's short list of 7), as callables
`template(classname) -> prompt` like open_clip's.

They are the English "imagenet" zero-shot pack that ships with the library (`zero_shot_packs`, sources in
`zero_shot_data/SOURCES.md`), read when first asked for, not at import.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .zero_shot_packs import load_zero_shot_pack

_NAMES = ("IMAGENET_CLASSNAMES", "OPENAI_IMAGENET_TEMPLATES", "SIMPLE_IMAGENET_TEMPLATES")
__all__ = [*_NAMES, "PromptTemplate"]

# the 7 of OpenAI's 80 templates in its short ensemble (CLIP's ImageNet prompt-engineering notebook)
_SIMPLE = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


class PromptTemplate:
    """A template as a callable: `PromptTemplate("a photo of a {}.")("dog") == "a photo of a dog."`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, classname: str) -> str:
        return self.text.format(classname)

    def __repr__(self) -> str:
        return f"PromptTemplate({self.text!r})"


@cache
def _metadata() -> dict[str, tuple]:
    english = load_zero_shot_pack("imagenet", "en")
    missing = [t for t in _SIMPLE if t not in english.templates]
    if missing:
        raise ValueError(f"the shipped English ImageNet templates lack {missing}; regenerate zero_shot_data")
    return {
        "IMAGENET_CLASSNAMES": tuple(english.classnames),
        "OPENAI_IMAGENET_TEMPLATES": tuple(PromptTemplate(t) for t in english.templates),
        "SIMPLE_IMAGENET_TEMPLATES": tuple(PromptTemplate(t) for t in _SIMPLE),
    }


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return _metadata()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
