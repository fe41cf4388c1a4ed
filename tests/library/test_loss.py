"""CLIP and SigLIP losses in one process: against naive references written here and against open_clip 3.3."""

from __future__ import annotations

import math

import open_clip.loss
import pytest
import torch
import torch.nn.functional as F

from open_mclip.loss import ClipLoss, SigLipLoss, create_loss


def unit_pairs(batch: int, dim: int, *, dtype: torch.dtype = torch.float32, noise: float = 0.8):
    """Unit-norm image features and texts that lean towards their own image, so positives stand out."""
    image = F.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=-1)
    text = F.normalize(image + noise * torch.randn(batch, dim, dtype=torch.float64), dim=-1)
    return image.to(dtype), text.to(dtype)


def naive_clip_loss(image, text, scale, bias=None):
    """InfoNCE written out pair by pair: mean over i of -log p(text i | image i) and -log p(image i | text i)."""
    n = image.shape[0]
    logit = [[scale * torch.dot(image[i], text[j]) + (0 if bias is None else bias) for j in range(n)] for i in range(n)]
    total = 0
    for i in range(n):
        row = sum(torch.exp(logit[i][j]) for j in range(n))
        column = sum(torch.exp(logit[j][i]) for j in range(n))
        total = total - torch.log(torch.exp(logit[i][i]) / row) - torch.log(torch.exp(logit[i][i]) / column)
    return total / (2 * n)


def naive_siglip_loss(image, text, scale, bias):
    """Sigmoid loss written out pair by pair: log(1 + exp(-z * logit)), z = +1 for own caption, -1 otherwise."""
    n = image.shape[0]
    total = 0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total = total + torch.log1p(torch.exp(-z * (scale * torch.dot(image[i], text[j]) + bias)))
    return total / n


def loss_and_grads(loss_fn, image, text, scale, bias=None):
    """Value of `loss_fn` and its gradients w.r.t. every input that is given."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (image, text, scale, bias) if t is not None]
    loss = loss_fn(*leaves)
    return loss.detach(), torch.autograd.grad(loss, leaves)


def assert_same(ours, reference, *, tol: float) -> None:
    (loss, grads), (ref_loss, ref_grads) = ours, reference
    torch.testing.assert_close(loss, ref_loss, atol=tol, rtol=tol)
    assert len(grads) == len(ref_grads)
    for name, grad, ref_grad in zip(("image", "text", "scale", "bias"), grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, atol=tol, rtol=tol, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("batch", [1, 5, 16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_clip_matches_naive_reference(batch, with_bias):
    image, text = unit_pairs(batch, 12, dtype=torch.float64)
    scale = torch.tensor(14.3, dtype=torch.float64)
    bias = torch.tensor(-2.5, dtype=torch.float64) if with_bias else None
    ours = loss_and_grads(ClipLoss(), image, text, scale, bias)
    assert_same(ours, loss_and_grads(naive_clip_loss, image, text, scale, bias), tol=1e-10)


@pytest.mark.parametrize("batch", [2, 7, 64])
@pytest.mark.parametrize("with_bias", [False, True])
def test_clip_matches_open_clip(batch, with_bias):
    image, text = unit_pairs(batch, 32)
    scale = torch.tensor(100.0)
    bias = torch.tensor(-4.0) if with_bias else None
    ours = loss_and_grads(ClipLoss(), image, text, scale, bias)
    theirs = loss_and_grads(open_clip.loss.ClipLoss(), image, text, scale, bias)
    assert_same(ours, theirs, tol=1e-6)


@pytest.mark.parametrize("batch", [1, 5, 16])
def test_siglip_matches_naive_reference(batch):
    image, text = unit_pairs(batch, 12, dtype=torch.float64)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    ours = loss_and_grads(SigLipLoss(), image, text, scale, bias)
    assert_same(ours, loss_and_grads(naive_siglip_loss, image, text, scale, bias), tol=1e-10)


@pytest.mark.parametrize("batch", [2, 7, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_siglip_matches_open_clip(batch, dtype):
    image, text = unit_pairs(batch, 32, dtype=dtype)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    ours = loss_and_grads(SigLipLoss(), image, text, scale, bias)
    theirs = loss_and_grads(open_clip.loss.SigLipLoss(), image, text, scale, bias)
    assert ours[0].dtype == theirs[0].dtype
    assert_same(ours, theirs, tol=1e-6)


def test_zero_scale_gives_closed_form_values():
    """With every logit equal, CLIP is log(batch) and SigLIP is batch * log(2) (each pair at sigmoid(0))."""
    image, text = unit_pairs(6, 8)
    zero = torch.tensor(0.0)
    torch.testing.assert_close(ClipLoss()(image, text, zero), torch.tensor(math.log(6)))
    torch.testing.assert_close(SigLipLoss()(image, text, zero, zero), torch.tensor(6 * math.log(2)))


def test_aligned_batch_gives_near_zero_loss_and_shuffled_batch_does_not():
    image = torch.eye(8, 16)  # (8, 16) orthonormal rows
    text = image.clone()
    scale = torch.tensor(100.0)
    assert ClipLoss()(image, text, scale) < 1e-6
    assert SigLipLoss()(image, text, scale, torch.tensor(-50.0)) < 1e-6
    shuffled = text.roll(1, dims=0)  # every text now belongs to another image
    assert ClipLoss()(image, shuffled, scale) > 50
    assert SigLipLoss()(image, shuffled, scale, torch.tensor(-50.0)) > 50


def test_output_dict():
    image, text = unit_pairs(4, 8)
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    for loss_fn, args in ((ClipLoss(), (scale,)), (SigLipLoss(), (scale, bias))):
        out = loss_fn(image, text, *args, output_dict=True)
        assert list(out) == ["contrastive_loss"]
        torch.testing.assert_close(out["contrastive_loss"], loss_fn(image, text, *args))


def test_labels_cached_per_device_and_batch_size():
    loss_fn = ClipLoss(cache_labels=True)
    scale = torch.tensor(20.0)
    for batch in (4, 6, 4):
        image, text = unit_pairs(batch, 8, dtype=torch.float64)
        torch.testing.assert_close(loss_fn(image, text, scale), naive_clip_loss(image, text, scale))
        # one process needs no labels (positives on the diagonal); local loss and open_clip's callers ask for them
        assert torch.equal(loss_fn.get_ground_truth(image.device, batch), torch.arange(batch))
    assert sorted(n for _, n in loss_fn._labels) == [4, 6]
    assert loss_fn.get_ground_truth(image.device, 4) is loss_fn.get_ground_truth(image.device, 4)
    uncached = ClipLoss(cache_labels=False)
    uncached.get_ground_truth(image.device, 4)
    assert uncached._labels == {}


def test_create_loss():
    clip = create_loss("clip", rank=1, world_size=4, local_loss=True, gather_with_grad=True)
    assert isinstance(clip, ClipLoss)
    assert (clip.rank, clip.world_size, clip.local_loss, clip.gather_with_grad) == (1, 4, True, True)
    siglip = create_loss("siglip", rank=2, world_size=3, siglip_dist_impl="gather")
    assert isinstance(siglip, SigLipLoss)
    assert (siglip.rank, siglip.world_size, siglip.dist_impl) == (2, 3, "gather")
    assert create_loss("siglip", siglip_dist_impl=None).dist_impl == "bidir"
    assert isinstance(create_loss(), ClipLoss)


def test_create_loss_rejects_bad_options():
    with pytest.raises(ValueError, match=r"'coca'.*'clip', 'siglip'"):
        create_loss("coca")
    with pytest.raises(ValueError, match="'ring'.*bidir"):
        create_loss("siglip", siglip_dist_impl="ring")
    with pytest.raises(ValueError, match="rank=2"):
        create_loss("clip", rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size=0"):
        create_loss("siglip", world_size=0)


def test_bad_inputs_are_reported():
    image, text = unit_pairs(4, 8)
    with pytest.raises(ValueError, match=r"\(4, 8\).*\(3, 8\)"):
        ClipLoss()(image, text[:3], torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="init_process_group"):
        ClipLoss(world_size=2)(image, text, torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="init_process_group"):
        SigLipLoss(world_size=2)(image, text, torch.tensor(1.0), torch.tensor(0.0))
