"""Programs written for open_clip, run unchanged on open_mclip through `python -m open_mclip.as_open_clip`:
CLIP_benchmark 1.6.2's own command line and clip-retrieval's model loader (all_clip 1.3.0), each beside the same
program on stock open_clip with the same weights. Each run is a separate process: the alias owns the name
`open_clip` in its process, and the reference needs it in its own."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.e2e

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _run(args: list[str], *, cwd: Path, stubs: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> Path:
    """Modules the tools import that are not under test: pycocoevalcap (captioning metrics, imported by
    CLIP_benchmark's command line) and OpenAI's `clip` package (imported by all_clip for its other backends)."""
    root = tmp_path_factory.mktemp("stubs")
    for module in ("tokenizer/ptbtokenizer", "bleu/bleu", "meteor/meteor", "rouge/rouge", "cider/cider", "spice/spice"):
        package, name = module.split("/")
        folder = root / "pycocoevalcap" / package
        folder.mkdir(parents=True, exist_ok=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / "__init__.py").write_text("")
        cls = {"ptbtokenizer": "PTBTokenizer"}.get(name, name.capitalize())
        (folder / f"{name}.py").write_text(f"class {cls}:\n    pass\n")
    (root / "clip.py").write_text('"""stub of OpenAI\'s clip package (not under test)"""\n')
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random ViT-S-32 weights saved by open_clip: both libraries load this file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vit-s-32.pt"
    torch.save(open_clip.create_model("ViT-S-32").state_dict(), path)
    return path


def _mnist_wds(folder: Path, mnist, count: int) -> Path:
    """MNIST test digits in CLIP_benchmark's local WebDataset layout: test/{nshards.txt,0.tar}, class names and
    templates."""
    images, labels = mnist["test"]
    (folder / "test").mkdir(parents=True)
    with tarfile.open(folder / "test" / "0.tar", "w") as tar:
        for index in range(count):
            png = io.BytesIO()
            Image.fromarray(images[index]).save(png, format="PNG")
            for ext, payload in (("png", png.getvalue()), ("cls", str(int(labels[index])).encode())):
                info = tarfile.TarInfo(f"{index:06d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    (folder / "test" / "nshards.txt").write_text("1")
    (folder / "classnames.txt").write_text("\n".join(DIGITS))
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of the number {c}.\na handwritten {c}.")
    return folder


# CLIP_benchmark 1.6.2's accuracy() calls float() on a 1-element array, which NumPy 2.4 refuses whichever library is
# loaded; the wrapper (run the same way for both) replaces that one helper and then runs CLIP_benchmark's real CLI.
BENCHMARK_WRAPPER = textwrap.dedent(
    """
    import sys
    import clip_benchmark.metrics.zeroshot_classification as zsc

    def accuracy(output, target, topk=(1,)):
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]

    zsc.accuracy = accuracy
    from clip_benchmark.cli import main
    sys.exit(main())
    """
)


def test_clip_benchmark_cli_gives_open_clips_accuracy(tmp_path, mnist, weights, stubs):
    data = _mnist_wds(tmp_path / "mnist_wds", mnist, count=120)
    wrapper = tmp_path / "clip_benchmark_cli.py"
    wrapper.write_text(BENCHMARK_WRAPPER)
    model = ["--model_type", "open_clip", "--model", "ViT-S-32", "--pretrained", str(weights)]
    dataset = ["--dataset", "wds/mnist", "--dataset_root", str(data), "--task", "zeroshot_classification"]
    common = ["eval", *model, *dataset, "--batch_size", "40", "--num_workers", "0", "--no_amp"]
    launchers = {
        "open_clip": [sys.executable, str(wrapper)],
        "open_mclip": [sys.executable, "-m", "open_mclip.as_open_clip", str(wrapper)],
    }
    results = {}
    for side, launcher in launchers.items():
        out = tmp_path / f"{side}.json"
        _run([*launcher, *common, "--output", str(out)], cwd=tmp_path, stubs=stubs)
        results[side] = json.loads(out.read_text())
    ours, theirs = results["open_mclip"]["metrics"], results["open_clip"]["metrics"]
    assert set(ours) >= {"acc1", "acc5", "mean_per_class_recall"}
    assert ours == pytest.approx(theirs, abs=1e-9)


LOADER_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from PIL import Image
    import numpy as np
    from all_clip.open_clip import load_open_clip
    import open_clip

    weights, out, use_jit = sys.argv[1], sys.argv[2], sys.argv[3] == "jit"
    model, preprocess, tokenizer = load_open_clip("ViT-S-32/" + weights, use_jit=use_jit, device="cpu")
    rng = np.random.default_rng(0)
    images = torch.stack([preprocess(Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)))
                          for _ in range(3)])
    with torch.no_grad():
        result = {"image": model.encode_image(images), "text": model.encode_text(tokenizer(["a cat", "ein Hund"])),
                  "library": open_clip.__name__}
    torch.save(result, out)
    """
)


def test_clip_retrieval_loader_gives_open_clips_embeddings(tmp_path, weights, stubs):
    script = tmp_path / "load_with_all_clip.py"
    script.write_text(LOADER_SCRIPT)
    theirs_path, ours_path = tmp_path / "theirs.pt", tmp_path / "ours.pt"
    _run([sys.executable, str(script), str(weights), str(theirs_path), "nojit"], cwd=tmp_path, stubs=stubs)
    shim = [sys.executable, "-m", "open_mclip.as_open_clip"]
    _run([*shim, str(script), str(weights), str(ours_path), "nojit"], cwd=tmp_path, stubs=stubs)
    ours, theirs = torch.load(ours_path), torch.load(theirs_path)
    assert (ours["library"], theirs["library"]) == ("open_mclip", "open_clip")
    torch.testing.assert_close(ours["image"], theirs["image"], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours["text"], theirs["text"], atol=1e-5, rtol=0)


def test_jit_request_is_refused_with_the_fix(tmp_path, weights, stubs):
    """clip-retrieval's back end defaults to use_jit=True; open_clip then scripts the model. Refused, naming the fix."""
    script = tmp_path / "load_with_all_clip.py"
    script.write_text(LOADER_SCRIPT)
    args = [sys.executable, "-m", "open_mclip.as_open_clip", str(script), str(weights), str(tmp_path / "x.pt"), "jit"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "--use_jit False" in result.stderr


ALIAS_PROBE = textwrap.dedent(
    """
    import sys
    import open_mclip
    open_mclip.install_as_open_clip()
    import open_clip, open_clip.tokenizer, open_clip.model, open_clip.zero_shot_metadata
    from open_clip.tokenizer import _tokenizer
    from open_clip import create_model_and_transforms, IMAGENET_CLASSNAMES
    assert open_clip is open_mclip and open_clip.model.CLIP is open_mclip.CLIP
    assert open_clip.tokenizer is sys.modules["open_mclip.tokenizer"]
    import open_clip.layers
    assert open_clip.layers is sys.modules["open_mclip.layers"]  # the same module object, not a second copy
    try:
        import open_clip.coca_model
    except ModuleNotFoundError as err:
        assert "no counterpart in open_mclip" in str(err)
    else:
        raise AssertionError("open_clip.coca_model imported")
    assert len(IMAGENET_CLASSNAMES) == 1000 and type(_tokenizer).__name__ == "SimpleTokenizer"
    print("aliased")
    """
)


def test_install_aliases_open_clip_and_its_submodules(tmp_path):
    result = subprocess.run([sys.executable, "-c", ALIAS_PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "aliased"


def test_install_refuses_when_the_real_open_clip_is_loaded():
    code = "import open_clip, open_mclip\ntry:\n    open_mclip.install_as_open_clip()\nexcept RuntimeError as e:\n"
    code += "    print(e)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "already imported" in result.stdout, result.stderr


def test_program_forms(tmp_path):
    """A module run as __main__, module:function, and a missing program fail or run as documented."""
    (tmp_path / "probe_mod.py").write_text(
        "import sys, open_clip\ndef go():\n    print('fn', open_clip.__name__, sys.argv[1:])\n"
        "if __name__ == '__main__':\n    print('main', open_clip.__name__, sys.argv[1:])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    runs = {
        "probe_mod": "main open_mclip ['a', 'b']",
        "probe_mod:go": "fn open_mclip ['a', 'b']",
    }
    for program, expected in runs.items():
        args = [sys.executable, "-m", "open_mclip.as_open_clip", program, "a", "b"]
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert result.stdout.strip() == expected, result.stderr
    usage = subprocess.run([sys.executable, "-m", "open_mclip.as_open_clip"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stdout
