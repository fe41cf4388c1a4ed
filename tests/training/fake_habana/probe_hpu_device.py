"""Run with tests/training/fake_habana on PYTHONPATH: exercise `HpuDevice` directly and print what was observed as JSON.

`--no-hpex` first blocks the bridge's fused optimizer and clipper, to observe the fallbacks to torch.
"""

from __future__ import annotations

import json
import sys

import torch


def _error(fn) -> str | None:
    try:
        fn()
    except ValueError as err:
        return str(err)
    return None


def main() -> None:
    if "--no-hpex" in sys.argv:
        sys.modules["habana_frameworks.torch.hpex.optimizers"] = None  # import of a None entry: ImportError
        sys.modules["habana_frameworks.torch.hpex.normalization"] = None
    from open_mclip.precision import Precision
    from training.devices import HpuDevice, get_device

    out = {"auto": type(get_device("auto")).__name__, "index_error": _error(lambda: HpuDevice(1))}
    device = get_device("hpu")
    loaded = "habana_frameworks" in sys.modules
    out["before_setup"] = {"torch_device": str(device.torch_device), "bridge_loaded": loaded}
    device.setup(0)
    out["after_setup"] = {
        "torch_device": str(device.torch_device),
        "lazy": device.lazy,
        "hccl_loaded": "habana_frameworks.torch.distributed.hccl" in sys.modules,
    }
    out["fp16_errors"] = {
        name: _error(lambda n=name: device.autocast(Precision.parse(n))) for name in ("amp", "fp16", "pure_fp16")
    }
    out["fp16_scaler_error"] = _error(lambda: device.grad_scaler(Precision.parse("amp")))
    out["bf16_scaler"] = repr(device.grad_scaler(Precision.parse("amp_bf16")))
    out["compile_backend"] = _error(lambda: device.compile_backend) or device.compile_backend
    layer = torch.nn.Linear(4, 3)
    optimizer = device.optimizer(layer.parameters(), lr=0.1, betas=(0.9, 0.98), eps=1e-6)
    out["optimizer"] = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    layer(torch.arange(8.0).reshape(2, 4)).square().sum().backward()
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in layer.parameters()]))
    norm = device.clip_grad_norm(layer.parameters(), 0.5)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in layer.parameters()]))
    out["clip"] = {"returned": norm.item(), "expected": expected.item(), "after": clipped.item()}
    out["memory_stats"] = device.memory_stats()
    from habana_frameworks.fake_log import CALLS

    out["calls"] = [c["call"] for c in CALLS]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
