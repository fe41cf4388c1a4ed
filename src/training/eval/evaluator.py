"""The evaluation after each epoch (and the whole of an evaluation-only run), built once from the eval config."""

from __future__ import annotations

import logging

from open_mclip.layers import drop_autocast_weights
from open_mclip.loss import create_loss

from ..config import EvalConfig
from ..data import DataInfo
from ..distributed import World
from ..logger import MetricsLogger
from ..placement import Placement
from .retrieval import retrieval_table, validate
from .zero_shot import ZeroShotPlan, zero_shot, zero_shot_table

log = logging.getLogger(__name__)


def due(frequency: int, *, epoch: int, final: bool) -> bool:
    """open_clip's --val-frequency / --zeroshot-frequency: every `frequency` epochs and after the last, never for 0."""
    return frequency > 0 and (final or epoch % frequency == 0)


class Evaluator:
    """Validation loss and recall on --val-data (rank 0), zero-shot accuracy on the plan's sets (every rank on its
    shard), each at its frequency and after the last epoch (a frequency of 0: never, as in open_clip); results are
    logged and returned by split."""

    def __init__(
        self,
        cfg: EvalConfig,
        *,
        plan: ZeroShotPlan,
        val: DataInfo | None,
        siglip: bool,
        tokenizer,
        preprocess,
        placement: Placement,
        world: World,
        logger: MetricsLogger,
        workers: int,
    ):
        self.cfg, self.plan, self.val, self.world, self.logger = cfg, plan, val, world, logger
        # validation runs on rank 0 alone: a loss that gathers nothing
        self.loss = create_loss("siglip" if siglip else "clip")
        self.tokenizer, self.preprocess, self.placement, self.workers = tokenizer, preprocess, placement, workers

    def __call__(self, model, *, epoch: int, final: bool) -> dict[str, dict]:
        """Evaluate `model` after `epoch` epochs (0: before any training); `final` (the last epoch, or an
        evaluation-only run) runs every evaluation whose frequency is not 0."""
        results = {}
        if self.val is not None and due(self.cfg.val_frequency, epoch=epoch, final=final) and self.world.is_master:
            results["val"] = validate(
                model, self.val.dataloader, self.loss, placement=self.placement, total_batches=self.val.num_batches
            )
            results["val"].update(self.val.skipped.metrics())  # each bad sample once, however many passes
        if self.plan and due(self.cfg.zeroshot_frequency, epoch=epoch, final=final):
            results.update(
                zero_shot(  # "zeroshot" (--zeroshot-data), "imagenet" (--imagenet-val), "imagenet-v2" (--imagenet-v2)
                    model,
                    self.plan,
                    tokenizer=self.tokenizer,
                    preprocess=self.preprocess,
                    placement=self.placement,
                    world=self.world,
                    workers=self.workers,
                )
            )
        self._log(results, epoch=epoch)
        # the 16-bit weight copies inference under autocast kept (layers.autocast_weight) would otherwise stay alive
        # through the next epoch's training, which changes every weight anyway (ViT-B-32: about 235 MiB)
        drop_autocast_weights(model)
        return results

    def _log(self, results: dict[str, dict], *, epoch: int) -> None:
        for split, metrics in results.items():
            self.logger.log(split, metrics, step=epoch, epoch=epoch)
        for key in ("zeroshot", "imagenet", "imagenet-v2"):
            if key in results and self.world.is_master:
                log.info("zero-shot accuracy (%s) after epoch %d:\n%s", key, epoch, zero_shot_table(results[key]))
        if any(key.endswith("_num_samples") for key in results.get("val", {})):  # captions tagged with languages
            log.info("retrieval recall per language after epoch %d:\n%s", epoch, retrieval_table(results["val"]))
