"""Run open_clip_train.main with the model configs of a folder registered in open_clip (test helper).

Usage: python tests/training/open_clip_train_main.py CONFIG_FOLDER [open_clip_train flags]
"""

import sys

import open_clip

open_clip.add_model_config(sys.argv[1])

from open_clip_train.main import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
