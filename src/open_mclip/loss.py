"""Contrastive losses for two-tower training: CLIP's softmax loss and SigLIP's sigmoid loss, on one rank or many.

Numbers and gradients match open_clip 3.3's `ClipLoss` and `SigLipLoss`. Distributed variants use `torch.distributed`
collectives (any backend, gloo included); the caller initialises the process group and passes rank and world size.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

LOSS_KINDS = ("clip", "siglip")
SIGLIP_DIST_IMPLS = ("bidir", "shift", "reduce", "gather")


def _check_rank(*, rank: int, world_size: int) -> None:
    """Reject a world size below one or a rank outside it."""
    if world_size < 1:
        raise ValueError(f"world_size={world_size} must be at least 1 (use 1 for single-process training)")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} is outside 0..{world_size - 1}; pass the global rank of this process")


def _check_process_group(world_size: int) -> None:
    """Fail clearly when a multi-rank loss runs without the process group it needs."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"world_size={world_size} needs torch.distributed: call torch.distributed.init_process_group() first, "
            "or build the loss with world_size=1"
        )
    if dist.get_world_size() != world_size:
        raise ValueError(f"world_size={world_size} but the process group has {dist.get_world_size()} ranks")


def _check_pairs(image_features: Tensor, text_features: Tensor) -> None:
    """Image and text features must be paired row by row."""
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            f"image features {tuple(image_features.shape)} and text features {tuple(text_features.shape)} must both "
            "be (batch, dim) with the same shape, one text per image"
        )


def _check_bias(logit_bias: object) -> None:
    """A bool in the logit-bias position is a mistaken `output_dict` (open_clip 3.3 would add it as +1)."""
    if isinstance(logit_bias, bool):
        raise TypeError(f"logit_bias={logit_bias!r} is not a bias; pass output_dict={logit_bias!r} by name")


def _autograd_collective(name: str, *args: object) -> object:
    """Call an autograd-aware collective from `torch.distributed.nn.functional`, whose backward is the adjoint
    collective. The module warns that it is deprecated in favour of a private API; it remains the public one."""
    from torch.distributed.nn import functional as dist_nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return getattr(dist_nn, name)(*args)


def _refuse_horovod(use_horovod: bool) -> None:
    if use_horovod:
        raise ValueError("use_horovod=True: Horovod is not supported; torch.distributed (any backend) is used instead")


def gather_features(
    image_features: Tensor,
    text_features: Tensor,
    local_loss: bool = False,
    gather_with_grad: bool = False,
    rank: int = 0,
    world_size: int = 1,
    use_horovod: bool = False,
) -> tuple[Tensor, Tensor]:
    """All-gather both feature sets in rank order: (n, d) each -> (n * world_size, d) each.

    With `gather_with_grad` every rank's loss sends gradient to every shard. Without it only this rank's shard keeps
    its gradient, put back in place unless `local_loss` (whose rows already carry it), as open_clip does.
    """
    _refuse_horovod(use_horovod)
    if gather_with_grad:
        image_shards = _autograd_collective("all_gather", image_features)
        text_shards = _autograd_collective("all_gather", text_features)
        return torch.cat(image_shards), torch.cat(text_shards)
    gathered = []
    for features in (image_features, text_features):
        shards = [torch.empty_like(features) for _ in range(world_size)]
        dist.all_gather(shards, features.contiguous())
        if not local_loss:
            shards[rank] = features
        gathered.append(torch.cat(shards))  # (n * world_size, d)
    return gathered[0], gathered[1]


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over scaled cosine similarities (CLIP): the i-th text is the i-th image's only positive.

    `local_loss` makes each rank score only its own rows against all gathered columns, N x (N * W) logits instead of
    (N * W)^2; each rank's loss is then its share, and the mean over ranks is the global loss.
    """

    def __init__(
        self,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        use_horovod: bool = False,
    ) -> None:
        super().__init__()
        _refuse_horovod(use_horovod)
        _check_rank(rank=rank, world_size=world_size)
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.rank = rank
        self.world_size = world_size
        self.cache_labels = cache_labels
        self._labels: dict[tuple[torch.device, int], Tensor] = {}

    def get_ground_truth(self, device: torch.device, num_rows: int) -> Tensor:
        """Column index of each logit row's positive: the row itself, offset by this rank's rows for local loss."""
        key = (device, num_rows)
        labels = self._labels.get(key)
        if labels is None:
            offset = num_rows * self.rank if self.local_loss and self.world_size > 1 else 0
            labels = torch.arange(offset, offset + num_rows, device=device)  # (rows,)
            if self.cache_labels:
                self._labels[key] = labels
        return labels

    def get_logits(
        self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor, logit_bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Logits per image and per text, (rows, columns) each, gathering other ranks' features when distributed."""
        if self.world_size == 1:
            per_image = logit_scale * image_features @ text_features.T  # (n, n)
            per_text = per_image.T  # one product instead of two: half the matrix work, forward and backward
        else:
            _check_process_group(self.world_size)
            all_image, all_text = gather_features(
                image_features,
                text_features,
                local_loss=self.local_loss,
                gather_with_grad=self.gather_with_grad,
                rank=self.rank,
                world_size=self.world_size,
            )  # (n * W, d) each
            if self.local_loss:
                per_image = logit_scale * image_features @ all_text.T  # (n, n * W)
                per_text = logit_scale * text_features @ all_image.T  # (n, n * W)
            else:
                per_image = logit_scale * all_image @ all_text.T  # (n * W, n * W)
                per_text = per_image.T
        if logit_bias is not None:
            transposed = _is_transpose(per_image, per_text)
            per_image = per_image + logit_bias
            per_text = per_image.T if transposed else per_text + logit_bias
        return per_image, per_text

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        output_dict: bool = False,
    ) -> Tensor | dict[str, Tensor]:
        """Mean of the image->text and text->image cross entropies; `logit_scale` is already exponentiated."""
        _check_bias(logit_bias)
        _check_pairs(image_features, text_features)
        per_image, per_text = self.get_logits(image_features, text_features, logit_scale, logit_bias)
        return self._contrastive(per_image, per_text, output_dict=output_dict)

    def _contrastive(self, per_image: Tensor, per_text: Tensor, *, output_dict: bool) -> Tensor | dict[str, Tensor]:
        if _is_transpose(per_image, per_text):  # one square matrix, positives on its diagonal
            loss = _symmetric_diagonal_cross_entropy(per_image)
        else:
            labels = self.get_ground_truth(per_image.device, per_image.shape[0])
            loss = (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2
        return {"contrastive_loss": loss} if output_dict else loss


def _is_transpose(a: Tensor, b: Tensor) -> bool:
    """Whether ``b`` is the transposed view of the 2-D ``a`` (same memory, swapped strides)."""
    return (
        a.dim() == b.dim() == 2
        and b.shape == a.shape[::-1]
        and b.data_ptr() == a.data_ptr()
        and b.stride() == a.stride()[::-1]
    )


def _symmetric_diagonal_cross_entropy(logits: Tensor) -> Tensor:
    """``(cross_entropy(logits, arange) + cross_entropy(logits.T, arange)) / 2`` for a square ``logits``, as
    log-softmaxes over rows and over columns of the one matrix: the cross entropy of the transposed view walks it
    column by column, 1.3-1.5x slower at 4096 and 8192 rows on a 2-core CPU. Gradients equal the cross entropies'
    to 1e-10 (the same log-softmax arithmetic; a log-sum-exp form would differ by float32 rounding of the scaled
    logits, about 1e-6)."""
    image_to_text = -F.log_softmax(logits, dim=1).diagonal().mean()
    text_to_image = -F.log_softmax(logits, dim=0).diagonal().mean()
    return (image_to_text + text_to_image) / 2


class DistillClipLoss(ClipLoss):
    """CLIP's loss plus distillation from a teacher: the cross entropy of the student's logits against the teacher's
    softmax over the same batch, averaged over both directions (open_clip's `DistillClipLoss`)."""

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        dist_image_features: Tensor,
        dist_text_features: Tensor,
        dist_logit_scale: Tensor,
        output_dict: bool = False,
    ) -> tuple[Tensor, Tensor] | dict[str, Tensor]:
        """(contrastive loss, distillation loss), or a dict of both with `output_dict`."""
        _check_pairs(image_features, text_features)
        per_image, per_text = self.get_logits(image_features, text_features, logit_scale)
        teacher_image, teacher_text = self.get_logits(dist_image_features, dist_text_features, dist_logit_scale)
        contrastive = self._contrastive(per_image, per_text, output_dict=False)
        distill = (_soft_cross_entropy(teacher_image, per_image) + _soft_cross_entropy(teacher_text, per_text)) / 2
        if output_dict:
            return {"contrastive_loss": contrastive, "distill_loss": distill}
        return contrastive, distill


def _soft_cross_entropy(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """Mean over rows of -sum(softmax(teacher) * log_softmax(student))."""
    return -(teacher_logits.softmax(dim=1) * student_logits.log_softmax(dim=1)).sum(dim=1).mean(dim=0)


class CoCaLoss(ClipLoss):
    """open_clip's CoCa loss (contrastive + captioning). CoCa models are not implemented here, so it is refused."""

    def __init__(
        self,
        caption_loss_weight: float,
        clip_loss_weight: float,
        pad_id: int = 0,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        use_horovod: bool = False,
    ) -> None:
        raise NotImplementedError("CoCaLoss: CoCa (captioning) models are not supported by open_mclip")


def _sigmoid_loss(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor, logit_bias: Tensor | None, *, paired: bool
) -> Tensor:
    """Sum over all pairs of -log sigmoid(sign * logit), divided by the number of images. The sign is +1 on the
    diagonal when the texts are these images' own captions (`paired`) and -1 everywhere else."""
    logits = logit_scale * image_features @ text_features.T  # (n, m)
    if logit_bias is not None:
        logits = logits + logit_bias
    # the signs take the features' dtype, as open_clip's labels do, so mixed precision rounds the same way
    signs = -torch.ones(logits.shape, device=logits.device, dtype=image_features.dtype)  # (n, m)
    if paired:
        signs.diagonal().fill_(1)
    return -F.logsigmoid(signs * logits).sum() / image_features.shape[0]


def _p2p_exchange(sends: Sequence[Tensor], to_ranks: Sequence[int], from_ranks: Sequence[int]) -> tuple[Tensor, ...]:
    """Send `sends[i]` to `to_ranks[i]` and receive the i-th result, shaped like it, from `from_ranks[i]`, posting
    every operation as one batch so that no ordering of ranks can deadlock."""
    received = [torch.empty_like(tensor, memory_format=torch.contiguous_format) for tensor in sends]
    ops = [dist.P2POp(dist.isend, tensor.contiguous(), peer) for tensor, peer in zip(sends, to_ranks)]
    ops += [dist.P2POp(dist.irecv, tensor, peer) for tensor, peer in zip(received, from_ranks)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return tuple(received)


class _NeighbourExchange(torch.autograd.Function):
    """`_p2p_exchange` under autograd: each received tensor's gradient travels back to the rank that sent it."""

    @staticmethod
    def forward(ctx, to_ranks: tuple[int, ...], from_ranks: tuple[int, ...], *sends: Tensor) -> tuple[Tensor, ...]:
        ctx.to_ranks, ctx.from_ranks = to_ranks, from_ranks
        return _p2p_exchange(sends, to_ranks, from_ranks)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:
        return (None, None, *_p2p_exchange(grads, ctx.from_ranks, ctx.to_ranks))


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss (SigLIP, arXiv:2303.15343): each image-text pair is an independent binary decision.

    Across ranks each rank's images meet every other rank's texts as negatives. `dist_impl` picks how the texts
    travel: "bidir" (both ways round the ring), "shift" (one way round the ring), "reduce" (masked all-reduce) or
    "gather" (all-gather). Each rank's loss is its share; the mean over ranks is the global loss.
    """

    def __init__(
        self, cache_labels: bool = False, rank: int = 0, world_size: int = 1, dist_impl: str | None = None
    ) -> None:
        super().__init__()
        _check_rank(rank=rank, world_size=world_size)
        dist_impl = dist_impl or "bidir"
        if dist_impl not in SIGLIP_DIST_IMPLS:
            raise ValueError(f"unknown SigLIP dist_impl {dist_impl!r}; choose one of {SIGLIP_DIST_IMPLS}")
        self.rank = rank
        self.world_size = world_size
        self.dist_impl = dist_impl

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None,
        output_dict: bool = False,
    ) -> Tensor | dict[str, Tensor]:
        """Loss of this rank's images against its own texts (positives on the diagonal) and all other ranks' texts."""
        _check_bias(logit_bias)
        _check_pairs(image_features, text_features)
        loss = _sigmoid_loss(image_features, text_features, logit_scale, logit_bias, paired=True)
        if self.world_size > 1:
            _check_process_group(self.world_size)
            for others in self._texts_of_other_ranks(text_features):
                loss = loss + _sigmoid_loss(image_features, others, logit_scale, logit_bias, paired=False)
        return {"contrastive_loss": loss} if output_dict else loss

    def _texts_of_other_ranks(self, text_features: Tensor) -> Iterator[Tensor]:
        """Yield every other rank's text features, (n, d) each, differentiably (gradients go back to their owner)."""
        if self.dist_impl in ("bidir", "shift"):
            yield from self._ring(text_features, bidirectional=self.dist_impl == "bidir")
        elif self.dist_impl == "reduce":
            for owner in range(self.world_size):
                # all ranks join each reduction, only the owner contributing non-zeros. The owner yields an empty
                # slice: it adds nothing to the loss but keeps the owner in the graph, so that it also joins the
                # all-reduce that the other ranks' backward passes call (else the ranks' collectives mismatch)
                shared = _autograd_collective("all_reduce", text_features * (self.rank == owner))
                yield shared if owner != self.rank else shared[:0]
        else:
            shards = _autograd_collective("all_gather", text_features)
            yield from (shard for owner, shard in enumerate(shards) if owner != self.rank)

    def _ring(self, text_features: Tensor, *, bidirectional: bool) -> Iterator[Tensor]:
        """Pass texts round the ring; bidirectional passing needs half the steps, plus one one-way step when the
        number of other ranks is odd (with two ranks, that single step is all there is)."""
        right, left = (self.rank + 1) % self.world_size, (self.rank - 1) % self.world_size
        to_left = to_right = text_features
        two_way_steps, one_way_steps = divmod(self.world_size - 1, 2) if bidirectional else (0, self.world_size - 1)
        for _ in range(two_way_steps):
            from_right, from_left = _NeighbourExchange.apply((left, right), (right, left), to_left, to_right)
            yield from (from_right, from_left)
            to_left, to_right = from_right, from_left
        for _ in range(one_way_steps):
            (from_left,) = _NeighbourExchange.apply((right,), (left,), to_right)
            yield from_left
            to_right = from_left


def create_loss(
    kind: str = "clip",
    *,
    rank: int = 0,
    world_size: int = 1,
    local_loss: bool = False,
    gather_with_grad: bool = False,
    siglip_dist_impl: str | None = "bidir",
) -> nn.Module:
    """Build the training loss by name. `local_loss` and `gather_with_grad` apply to "clip" only, and
    `siglip_dist_impl` (None means "bidir") to "siglip" only."""
    if kind == "clip":
        return ClipLoss(
            local_loss=local_loss,
            gather_with_grad=gather_with_grad,
            cache_labels=True,
            rank=rank,
            world_size=world_size,
        )
    if kind == "siglip":
        return SigLipLoss(rank=rank, world_size=world_size, dist_impl=siglip_dist_impl or "bidir")
    raise ValueError(f"unknown loss kind {kind!r}; choose one of {LOSS_KINDS}")
