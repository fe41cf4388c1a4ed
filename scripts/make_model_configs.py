"""Regenerate model_configs/*.json (our schema) from the architecture facts in open_clip 3.3.0's configs.

Dev-time only: needs open_clip_torch installed. The architecture numbers (widths, depths, patch sizes)
come from open_clip's model_configs (MIT licence, https://github.com/mlfoundations/open_clip).
Usage: python scripts/make_model_configs.py
"""

import json
from pathlib import Path

import open_clip

from open_mclip.config import ModelConfig

ARCHITECTURES = """
ViT-S-32 ViT-S-16 ViT-M-32 ViT-M-16 ViT-B-32 ViT-B-32-quickgelu ViT-B-16 ViT-B-16-quickgelu ViT-B-16-plus-240
ViT-L-14 ViT-L-14-quickgelu ViT-L-14-336 ViT-L-14-336-quickgelu ViT-H-14 ViT-H-14-quickgelu ViT-g-14
ViT-bigG-14 ViT-bigG-14-quickgelu ViT-e-14 RN50 RN50-quickgelu RN101 RN101-quickgelu RN50x4 RN50x4-quickgelu
RN50x16 RN50x16-quickgelu RN50x64 RN50x64-quickgelu convnext_base xlm-roberta-base-ViT-B-32
xlm-roberta-large-ViT-H-14 roberta-ViT-B-32 mt5-base-ViT-B-32 mt5-xl-ViT-H-14 nllb-clip-base nllb-clip-large
ViT-B-32-256 ViT-B-16-plus ViT-B-32-plus-256 ViT-L-14-280 ViT-L-16 ViT-L-16-320 ViT-H-16 ViT-H-14-378
ViT-H-14-378-quickgelu ViT-S-32-alt ViT-S-16-alt ViT-M-32-alt ViT-M-16-alt ViT-L-14-CLIPA ViT-L-14-CLIPA-336
ViT-H-14-CLIPA ViT-H-14-CLIPA-336 ViT-bigG-14-CLIPA ViT-bigG-14-CLIPA-336 ViT-L-14-worldwide
ViT-L-14-worldwide-quickgelu ViT-H-14-worldwide ViT-H-14-worldwide-quickgelu ViT-H-14-worldwide-378
ViT-bigG-14-worldwide ViT-bigG-14-worldwide-378 ViT-B-16-SigLIP ViT-B-16-SigLIP-256 ViT-B-16-SigLIP-384
ViT-B-16-SigLIP-512 ViT-B-16-SigLIP-i18n-256 ViT-L-16-SigLIP-256 ViT-L-16-SigLIP-384 ViT-SO400M-14-SigLIP
ViT-SO400M-14-SigLIP-378 ViT-SO400M-14-SigLIP-384 ViT-SO400M-16-SigLIP-i18n-256
""".split()


def compact_json(data: dict) -> str:
    """One line per top-level key: a whole tower reads at a glance."""
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in data.items())
    return "{\n" + body + "\n}\n"


def main() -> None:
    source = Path(open_clip.__file__).parent / "model_configs"
    target = Path(__file__).resolve().parents[1] / "model_configs"
    for name in ARCHITECTURES:
        path = source / f"{name}.json"
        cfg = ModelConfig.from_dict(json.loads(path.read_text()), source=str(path))
        (target / f"{name}.json").write_text(compact_json(cfg.to_dict()))
    print(f"wrote {len(ARCHITECTURES)} configs to {target}")


if __name__ == "__main__":
    main()
