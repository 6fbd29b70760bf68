"""CAMs that score each channel by masking the input image with it or ablating it from the target layer
(Opti-CAM, which optimises the weights, is :mod:`attribution.methods.opticam`)."""

from __future__ import annotations

import torch
from torch import Tensor

from attribution.channel_scaling import ChannelScaling
from attribution.methods.base import ChannelWeights, Seeds, Targets, WeightedCAM, forward_pass
from attribution.methods.registry import register
from attribution.params import integer
from attribution.postprocess import minmax_normalize, upsample
from attribution.split import LayerSplit

__all__ = ["AblationCAM", "ScoreCAM"]


@register
class ScoreCAM(WeightedCAM):
    """Score-CAM (Wang et al., CVPRW 2020, eq. 4–6 and Sec. 4.1): each channel's map, upsampled
    and min-max normalised to ``H^k``, masks the input; its weight is the softmax probability of
    the target class on ``x ⊙ H^k`` (the authors' implementation, no baseline subtracted).

    A channel with a constant map masks the input to the zero image; all such channels share one
    forward pass, the only saving over the definition (exact, and large after a ReLU layer).
    """

    name = "scorecam"

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = integer("batch_size", batch_size, 1)

    def channel_logits(self, split: LayerSplit, images: Tensor, targets: Targets) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits of x ⊙ H^k (B, K, classes), maps (B, K, U, V), targets (B,))``."""
        base = forward_pass(split, images, targets)
        maps = base.maps
        b, k = maps.shape[:2]
        flat = maps.reshape(b * k, *maps.shape[2:])
        informative = (maps.amax(dim=(2, 3)) > maps.amin(dim=(2, 3))).reshape(-1)
        rows = informative.nonzero().flatten()
        logits = torch.empty(b * k, base.logits.shape[1], device=images.device, dtype=base.logits.dtype)
        with torch.no_grad():
            logits[:] = split.head(*split.features(torch.zeros_like(images[:1])))  # every constant mask
            for start in range(0, rows.numel(), self.batch_size):
                idx = rows[start : start + self.batch_size]
                masks = minmax_normalize(upsample(flat[idx], images.shape[-2:]))  # (n, H, W)
                logits[idx] = split.head(*split.features(images[idx // k] * masks[:, None]))
        return logits.reshape(b, k, -1), maps, base.targets

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        logits, maps, resolved = self.channel_logits(split, images, targets)
        probs = logits.softmax(dim=2)
        weights = probs.gather(2, resolved[:, None, None].expand(-1, probs.shape[1], 1)).squeeze(2)
        return ChannelWeights(weights, maps, resolved)


@register
class AblationCAM(WeightedCAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020, eq. 3): ``w_k = (y^c − y^c_k) / y^c`` where
    ``y^c_k`` is the target score with channel ``k`` of the target layer set to zero. Only the
    network after the target layer is re-run (``K`` suffix passes, batched; on pooled vectors when the
    suffix starts with a global average pool, :class:`~attribution.channel_scaling.ChannelScaling`)."""

    name = "ablationcam"

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = integer("batch_size", batch_size, 1)

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        base = forward_pass(split, images, targets)
        b, k = base.maps.shape[:2]
        g = ChannelScaling(split, base.feats, base.live, base.layout, base.targets, chunk=self.batch_size)
        eye = torch.eye(k, device=images.device, dtype=base.feats.dtype)
        per_chunk = max(1, self.batch_size // b)
        with torch.no_grad():
            score = g.scores(torch.ones_like(eye[:1]))[:, 0]
            ablated = torch.empty(b, k, device=images.device, dtype=score.dtype)
            for start in range(0, k, per_chunk):
                z = 1 - eye[start : start + per_chunk]  # (P, K): channel start+p switched off
                ablated[:, start : start + z.shape[0]] = g.scores(z)
        return ChannelWeights((score[:, None] - ablated) / score[:, None], base.maps, base.targets)
