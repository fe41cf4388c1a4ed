"""Regenerate model_configs/*.json (our schema) from the architecture facts in open_clip 3.3.0's configs.

Dev-time only: needs open_clip_torch installed. The architecture numbers (widths, depths, patch sizes)
come from open_clip's model_configs (MIT licence, https://github.com/mlfoundations/open_clip).
Usage: python scripts/make_model_configs.py
"""

import json
from pathlib import Path

import open_clip

from open_mclip.config import ModelConfig

# open_clip's spellings, one family a line; every config of open_clip's that our schema converts is here (the
# coverage test, tests/library/test_open_clip_coverage.py, names any that is not)
FAMILIES = {
    "OpenAI and LAION ViTs": """ViT-S-32 ViT-S-16 ViT-M-32 ViT-M-16 ViT-B-32 ViT-B-32-quickgelu ViT-B-16
        ViT-B-16-quickgelu ViT-B-16-plus-240 ViT-L-14 ViT-L-14-quickgelu ViT-L-14-336 ViT-L-14-336-quickgelu ViT-H-14
        ViT-H-14-quickgelu ViT-g-14 ViT-bigG-14 ViT-bigG-14-quickgelu ViT-e-14""",
    "ModifiedResNets": """RN50 RN50-quickgelu RN101 RN101-quickgelu RN50x4 RN50x4-quickgelu RN50x16 RN50x16-quickgelu
        RN50x64 RN50x64-quickgelu""",
    "Hugging Face text towers": """xlm-roberta-base-ViT-B-32 xlm-roberta-large-ViT-H-14 roberta-ViT-B-32
        mt5-base-ViT-B-32 mt5-xl-ViT-H-14 nllb-clip-base nllb-clip-large""",
    "other ViT sizes": """ViT-B-32-256 ViT-B-16-plus ViT-B-32-plus-256 ViT-L-14-280 ViT-L-16 ViT-L-16-320 ViT-H-16
        ViT-H-14-378 ViT-H-14-378-quickgelu ViT-S-32-alt ViT-S-16-alt ViT-M-32-alt ViT-M-16-alt""",
    "CLIPA": """ViT-L-14-CLIPA ViT-L-14-CLIPA-336 ViT-H-14-CLIPA ViT-H-14-CLIPA-336 ViT-bigG-14-CLIPA
        ViT-bigG-14-CLIPA-336""",
    "MetaCLIP 2 (worldwide)": """ViT-L-14-worldwide ViT-L-14-worldwide-quickgelu ViT-H-14-worldwide
        ViT-H-14-worldwide-quickgelu ViT-H-14-worldwide-378 ViT-bigG-14-worldwide ViT-bigG-14-worldwide-378""",
    "SigLIP": """ViT-B-16-SigLIP ViT-B-16-SigLIP-256 ViT-B-16-SigLIP-384 ViT-B-16-SigLIP-512 ViT-B-16-SigLIP-i18n-256
        ViT-L-16-SigLIP-256 ViT-L-16-SigLIP-384 ViT-SO400M-14-SigLIP ViT-SO400M-14-SigLIP-378 ViT-SO400M-14-SigLIP-384
        ViT-SO400M-16-SigLIP-i18n-256""",
    "NLLB-SigLIP (timm SigLIP image tower, NLLB text tower)": "nllb-clip-base-siglip nllb-clip-large-siglip",
    "timm ConvNeXt": """convnext_base convnext_base_w convnext_base_w_320 convnext_large convnext_large_d
        convnext_large_d_320 convnext_small convnext_tiny convnext_xlarge convnext_xxlarge convnext_xxlarge_320""",
    "other timm trunks": "swin_base_patch4_window7_224 vit_medium_patch16_gap_256 vit_relpos_medium_patch16_cls_224",
    "EVA (timm)": "EVA01-g-14 EVA01-g-14-plus EVA02-B-16 EVA02-L-14 EVA02-L-14-336 EVA02-E-14 EVA02-E-14-plus",
    "MobileCLIP (timm FastViT / ViT trunks)": """MobileCLIP-S1 MobileCLIP-S2 MobileCLIP-B MobileCLIP2-S0 MobileCLIP2-S2
        MobileCLIP2-S3 MobileCLIP2-S4 MobileCLIP2-B MobileCLIP2-L-14""",
    "PE-Core (timm)": "PE-Core-T-16-384 PE-Core-S-16-384 PE-Core-B-16 PE-Core-L-14-336 PE-Core-bigG-14-448",
    "ViTamin (timm)": """ViTamin-S ViTamin-S-LTT ViTamin-B ViTamin-B-LTT ViTamin-L ViTamin-L-256 ViTamin-L-336
        ViTamin-L-384 ViTamin-L2 ViTamin-L2-256 ViTamin-L2-336 ViTamin-L2-384 ViTamin-XL-256 ViTamin-XL-336
        ViTamin-XL-384""",
}
ARCHITECTURES = [name for names in FAMILIES.values() for name in names.split()]


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
