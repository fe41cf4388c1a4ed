"""Packaging for open_mclip (the library) and training (the trainer), src layout."""

import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent
# the version is written once, in the library (open_mclip/version.py)
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "src/open_mclip/version.py").read_text(), re.M).group(1)

EXTRAS = {
    "training": ["webdataset>=0.2.86", "braceexpand", "pandas", "tensorboard", "matplotlib", "fsspec"],
    "hf": ["transformers>=4.40", "tokenizers", "sentencepiece", "protobuf"],
    "timm": ["timm>=1.0"],
    "wandb": ["wandb"],  # --report-to wandb
    "s3": ["s3fs"],  # --remote-sync s3://... (fsspec's s3 filesystem)
    # open_mclip.search: Parquet metadata, the web page (FastAPI + uvicorn); faiss for the approximate index
    "search": ["pyarrow", "fastapi", "uvicorn"],
    "faiss": ["faiss-cpu"],
    "bench": ["matplotlib"],  # bench.scaling_report's plot (imported only when plotting)
}
EXTRAS["test"] = sorted(
    set(
        EXTRAS["training"]
        + EXTRAS["bench"]
        + EXTRAS["hf"]
        + EXTRAS["timm"]
        + EXTRAS["wandb"]
        + EXTRAS["search"]
        + EXTRAS["faiss"]
    )
    | {
        "pytest>=8",
        "pytest-xdist",
        "open_clip_torch==3.3.0",  # the reference our models, tokenizer and transforms are checked against
        "torchvision",  # open_clip needs it; our library does not
        "scikit-image",
        "scikit-learn",
        "matplotlib",
        "ruff",
        "requests",  # CLIP_benchmark imports it (tests/test_as_open_clip.py runs its command line)
        "selenium",  # drives headless Chromium in the search page test (tests/search/test_search_e2e.py)
    }
)

setup(
    name="open_mclip",
    version=VERSION,
    description="CLIP-style contrastive image-text models and trainer, multilingual first; loads open_clip checkpoints",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_namespace_packages("src", include=["open_mclip*", "training*"]),
    package_data={
        "open_mclip": [
            "bpe_simple_vocab_16e6.txt.gz",
            "NOTICE_bpe_vocab.md",
            "model_configs/*.json",
            "pretrained.json",
            "zero_shot_data/*.json",
            "zero_shot_data/SOURCES.md",
            "search/static/*.html",
        ],
        "training": ["demo_data/*.json"],
    },
    include_package_data=True,
    install_requires=["torch>=2.4", "numpy", "Pillow", "ftfy", "regex", "huggingface_hub", "safetensors", "tqdm"],
    extras_require=EXTRAS,
)
