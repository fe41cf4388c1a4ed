"""What surrounds the model for training: DDP with open_clip's --use-bn-sync and --ddp-static-graph, the device index
open_clip's --no-set-device-rank leaves alone, and unwrap back to the CLIP module."""

from __future__ import annotations

import pytest
import torch

import open_mclip
from training import main as main_module
from training import wrap
from training.config import ModelConfig, SystemConfig
from training.devices import Device
from training.distributed import World
from training.params import parse_args


class _RecordingDDP(torch.nn.Module):
    """Stands in for DistributedDataParallel (which needs a process group of two ranks)."""

    def __init__(self, module, **kwargs):
        super().__init__()
        self.module, self.kwargs = module, kwargs


@pytest.mark.parametrize("bn_sync", [False, True])
def test_two_ranks_wrap_in_ddp_and_sync_batchnorm_on_request(monkeypatch, bn_sync):
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", _RecordingDDP)
    model = open_mclip.create_model("mclip-tiny-rn")  # a ModifiedResNet: BatchNorm layers
    system = SystemConfig(use_bn_sync=bn_sync, ddp_static_graph=True)
    wrapped = wrap.wrap_for_training(
        model, model_cfg=ModelConfig(), system=system, world=World(0, 0, 2), device=Device()
    )
    assert isinstance(wrapped, _RecordingDDP) and wrapped.kwargs == {"static_graph": True}
    assert wrap.unwrap(wrapped) is model
    kinds = {type(m) for m in model.modules()}
    assert (torch.nn.SyncBatchNorm in kinds) is bn_sync and (torch.nn.BatchNorm2d in kinds) is not bn_sync
    one_rank = wrap.wrap_for_training(model, model_cfg=ModelConfig(), system=system, world=World(), device=Device())
    assert one_rank is model  # nothing to synchronise with


@pytest.mark.parametrize("flag, index", [([], 3), (["--no-set-device-rank"], 0)])
def test_the_device_index_follows_the_local_rank_unless_told_not_to(monkeypatch, tmp_path, flag, index):
    seen = []
    monkeypatch.setattr(Device, "setup", lambda self, local_rank: seen.append(local_rank))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "3")
    run = main_module.setup(parse_args(["--device", "cpu", *flag, "--logs", str(tmp_path), "--name", "run"]))
    run.logger.close()
    assert seen == [index]
