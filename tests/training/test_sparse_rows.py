"""Row-sparse AdamW for token tables: the same parameters and moments as torch.optim.AdamW (what open_clip_train
uses) on a real tiny XLM-R model, bit for bit, through clipping, zeroed (skipped) steps, learning-rate changes and a
state-dict round trip; which tables qualify, and the flag that turns it off."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import open_mclip
from open_mclip.loss import create_loss
from training.config import OptimConfig
from training.devices import get_device
from training.optim import create_optimizer, param_groups
from training.params import parse_args
from training.sparse_rows import RowSparseAdamW, nonzero_rows, row_sparse_parameters

# one thread: each of these small operations would otherwise wait for the second thread of two busy cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")

ADAMW = {"lr": 1e-3, "betas": (0.9, 0.98), "eps": 1e-6}
BATCH, CONTEXT = 4, 12
VOCAB = 20000
RECIPE_TOKENS = 128 * 32  # docs/multilingual.md: batch 128, context 32


@pytest.fixture(scope="module")
def xlmr():
    """mclip-tiny-xlmr, a random XLM-R tower, with 20,000 of XLM-R's 250,002 token rows (the test's time is the
    dense AdamW it compares with); eval mode, so that dropout draws no random numbers."""
    cfg = open_mclip.model_config("mclip-tiny-xlmr")
    text = dataclasses.replace(cfg.text, model_kwargs={**cfg.text.model_kwargs, "vocab_size": VOCAB})
    torch.manual_seed(0)
    return open_mclip.CLIP(dataclasses.replace(cfg, text=text)).eval()


def _batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Images and token ids; each step draws from its own slice of the vocabulary, so rows used early get zero
    gradients later (their moments must still decay, as in torch's AdamW)."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for step in range(steps):
        ids = torch.randint(1000 * (step % 3), 1000 * (step % 3) + 300, (BATCH, CONTEXT), generator=gen)
        ids[:, 0], ids[1, 8:] = 0, 1  # <s>, and padding in one row (XLM-R's pad id 1)
        out.append((torch.randn(BATCH, 3, 32, 32, generator=gen), ids))
    return out


def _train(model, optimizer, batches, *, skip: int | None = None, start: int = 0, steps: int = 6) -> None:
    """Forward, CLIP loss, backward, clip to norm 1, step; step `skip` has its gradients zeroed first (what the
    divergence guard does with a non-finite step); the learning rate changes every step."""
    loss_fn = create_loss("clip")
    for index, (images, texts) in enumerate(batches, start=start):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * (1 + index) / steps
        image_features, text_features, logit_scale = model(images, texts)[:3]
        loss_fn(image_features, text_features, logit_scale).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if index == skip:
            for p in model.parameters():
                p.grad.zero_()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _pair(model):
    """Two copies of `model` with torch's AdamW and with row-sparse AdamW on the token table."""
    ours_model, theirs_model = copy.deepcopy(model), copy.deepcopy(model)
    theirs = torch.optim.AdamW(param_groups(theirs_model, weight_decay=0.1), **ADAMW)
    tables = row_sparse_parameters(ours_model, tokens_per_step=RECIPE_TOKENS)
    ours = RowSparseAdamW(param_groups(ours_model, weight_decay=0.1), row_params=tables, **ADAMW)
    return (ours_model, ours), (theirs_model, theirs)


def _assert_same(ours_model, ours, theirs_model, theirs) -> None:
    for (name, p), q in zip(ours_model.named_parameters(), theirs_model.parameters()):
        assert torch.equal(p, q), name
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(ours.state[p][key], theirs.state[q][key]), f"{name} {key}"


def test_the_same_parameters_and_moments_as_torch_adamw_bit_for_bit(xlmr):
    (ours_model, ours), (theirs_model, theirs) = _pair(xlmr)
    assert [id(p) for p in ours.row_params] == [id(ours_model.text.transformer.embeddings.word_embeddings.weight)]
    batches = _batches(6)
    _train(ours_model, ours, batches, skip=4)
    _train(theirs_model, theirs, batches, skip=4)
    _assert_same(ours_model, ours, theirs_model, theirs)
    table = theirs_model.text.transformer.embeddings.word_embeddings.weight
    start = xlmr.text.transformer.embeddings.word_embeddings.weight
    decayed = start.clone()
    for step in range(6):
        decayed.mul_(1 - 1e-3 * (1 + step) / 6 * 0.1)
    moved = (table != decayed).any(dim=1)
    used = torch.zeros(VOCAB, dtype=torch.bool)
    for _, ids in batches[:4] + batches[5:]:  # step 4's gradients were zeroed
        used[ids] = True
    used[1] = False  # XLM-R's padding row never has a gradient
    last_used_first = used.clone()
    for _, ids in batches[1:]:
        last_used_first[ids] = False
    # the test is not vacuous: rows used in the first step only had zero gradients for 5 steps and still moved by
    # more than the decay (as torch's AdamW moves them), while rows never used (or only in the zeroed step 4) got
    # exactly the decay
    assert last_used_first.sum() > 10 and moved[used].all() and not moved[~used].any()
    assert torch.equal(ours.rows_in_use(ours.row_params[0]), used)


def test_accumulated_gradients_of_several_backward_passes(xlmr):
    """--accum-freq and DDP sum gradients before the step: rows touched by either pass are found in the sum."""
    (ours_model, ours), (theirs_model, theirs) = _pair(xlmr)
    loss_fn = create_loss("clip")
    for model, optimizer in ((ours_model, ours), (theirs_model, theirs)):
        for first, second in (_batches(4)[:2], _batches(4)[2:]):
            for images, texts in (first, second):
                loss_fn(*model(images, texts)[:3]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    _assert_same(ours_model, ours, theirs_model, theirs)


def test_state_dict_is_torch_adamw_layout_and_resumes_exactly(xlmr):
    (ours_model, ours), (theirs_model, theirs) = _pair(xlmr)
    batches = _batches(5)
    _train(ours_model, ours, batches[:3], steps=5)
    _train(theirs_model, theirs, batches, steps=5)
    saved = ours.state_dict()
    resumed = RowSparseAdamW(param_groups(ours_model, weight_decay=0.1), row_params=ours.row_params, **ADAMW)
    resumed.load_state_dict(saved)
    assert sorted(saved["state"][0]) == ["exp_avg", "exp_avg_sq", "step"]
    assert torch.optim.AdamW(param_groups(ours_model, weight_decay=0.1), **ADAMW).load_state_dict(saved) is None
    _train(ours_model, resumed, batches[3:], start=3, steps=5)
    _assert_same(ours_model, resumed, theirs_model, theirs)


def test_nonzero_rows_sees_every_bit():
    table = torch.zeros(6, 4)
    table[1, 2], table[2, 0], table[3, 3], table[4, 1] = 1e-45, -0.0, float("nan"), -3.0
    assert nonzero_rows(table).tolist() == [False, True, True, True, True, False]
    assert nonzero_rows(table.to(torch.bfloat16)).tolist() == [False, False, True, True, True, False]  # 1e-45 -> 0


def test_tables_qualify_by_size_against_the_tokens_of_a_step(xlmr):
    embeddings = xlmr.text.transformer.embeddings
    ids = [id(p) for p in row_sparse_parameters(xlmr, tokens_per_step=RECIPE_TOKENS)]
    assert ids == [id(embeddings.word_embeddings.weight)]
    assert row_sparse_parameters(xlmr, tokens_per_step=VOCAB) == []  # a batch could touch every row
    ids = [id(p) for p in row_sparse_parameters(xlmr, tokens_per_step=8)]  # and 514 positions are many for 8 tokens
    assert ids == [id(embeddings.word_embeddings.weight), id(embeddings.position_embeddings.weight)]
    tiny = open_mclip.create_model("mclip-tiny")  # CLIP BPE, 49,408 rows
    ids = [id(p) for p in row_sparse_parameters(tiny, tokens_per_step=64 * 77)]
    assert ids == [id(tiny.text.token_embedding.weight)]


def test_the_trainer_uses_it_unless_dense_token_tables(xlmr):
    device = get_device("cpu")
    optimizer = create_optimizer(xlmr, OptimConfig(), device=device, model_name="mclip-tiny-xlmr", tokens_per_step=4096)
    assert type(optimizer) is RowSparseAdamW and len(optimizer.row_params) == 1
    assert optimizer.defaults["betas"] == (0.9, 0.98)  # the ViT defaults survive the rebuild
    dense = parse_args(["--dense-token-tables"]).optim
    optimizer = create_optimizer(xlmr, dense, device=device, model_name="mclip-tiny-xlmr", tokens_per_step=4096)
    assert type(optimizer) is torch.optim.AdamW


def test_step_hooks_run_once_per_step():
    table = torch.nn.Embedding(100, 4)
    torch.optim.AdamW(table.parameters())  # torch wraps AdamW.step in its hook runner once it has built one
    optimizer = RowSparseAdamW(table.parameters(), row_params=[table.weight], **ADAMW)
    calls = []
    optimizer.register_step_pre_hook(lambda *_: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *_: calls.append("post"))
    table(torch.tensor([1, 2])).sum().backward()
    optimizer.step()
    assert calls == ["pre", "post"] and optimizer.rows_in_use(table.weight).sum() == 2
