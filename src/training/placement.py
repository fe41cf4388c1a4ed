"""Where model inputs go and in which dtype: one helper for every consumer of a batch.

Training, contrastive accumulation, validation and zero-shot evaluation all feed the model through a `Placement`:
images are moved to the device in the precision's input dtype (bf16 and pure_bf16 weights take bf16 images), token
ids are moved as they are (integers), and the model runs under the precision's autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from open_mclip.precision import Precision

from .devices import Device


@dataclass(frozen=True)
class Placement:
    """A device and a precision: how model inputs are placed and under which autocast the model runs."""

    device: Device
    precision: Precision

    def autocast(self):
        """The precision's autocast on this device (a null context for fp32 and the cast-weight modes)."""
        return self.device.autocast(self.precision)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """(batch, 3, height, width) pixels on the device, in the dtype the image tower's weights expect."""
        return images.to(self.device.torch_device, dtype=self.precision.input_dtype, non_blocking=True)

    def tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, context_length) token ids on the device (ids stay integers)."""
        return tokens.to(self.device.torch_device, non_blocking=True)

    def batch(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images(images), self.tokens(tokens)
