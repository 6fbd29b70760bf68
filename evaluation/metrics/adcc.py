"""ADCC: Average Drop, Coherency and Complexity in one score (Poppi et al., "Revisiting the Evaluation of
Class Activation Mapping for Explainability: A Novel Metric and Experimental Analysis", CVPRW 2021;
official code ``aimagelab/ADCC``), as seed 003 (Opti-CAM, §5.3.3, Table 4) reports it.

Per sample, with the map ``s`` min-max normalised to ``[0, 1]`` and ``x ⊙ s`` the image masked by it
(:func:`attribution.postprocess.mask_images`; ``mask_space`` as in AD/AI/AG, pixel space by default):

    Coherency  = (Pearson(s, s') + 1) / 2,   s' the map the same method gives for x ⊙ s (``batch.explainer``)
    Complexity = ‖s‖₁ / (H·W)
    AvgDrop    = [y − o]₊ / y,               y, o the target's softmax probabilities on x and on x ⊙ s
    ADCC       = 3 · (1/Coherency + 1/(1 − Complexity) + 1/(1 − AvgDrop))⁻¹

the harmonic mean of three higher-is-better terms, so higher is better. Seed 003's Table 4 marks ADCC
"↓"; that contradicts Poppi's definition, which this follows. ADCC is one number in ``[0, 1]`` (not × 100).
The Pearson correlation does not change under the min-max normalisation of either map.

Undefined samples (NaN, logged with the reason):

- a constant map: it has no min-max normalisation and no correlation;
- a constant (or non-finite) re-explained map ``s'``: the correlation is undefined;
- ``y = 0``: AvgDrop divides by zero;
- Coherency 0 (``s'`` exactly anti-correlated with ``s``) or AvgDrop 1 (``o = 0``): a term of the harmonic
  mean is 0, so its inverse divides by zero (the limit would be 0).

``1 − Complexity`` is never 0: a non-constant min-max normalised map is 0 at its minimum.

Official code (differences): its masked image multiplies the *normalised* tensor (``mask_space="normalized"``);
its AvgDrop divides by the top-class probability and its Coherency re-explains for the predicted class
(the same as here when the target is the predicted class); it gives Coherency 0 for a NaN map; its
``metrics/adcc.py`` (commit 280b48e) returns ``3 · Σ 1/term`` without the inverse, which is not Poppi's equation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attribution.needs import Need
from attribution.postprocess import mask_images
from evaluation.base import Batch, Metric, flat, mark_undefined, safe_divide
from evaluation.metrics.classification import masked_confidence
from evaluation.perturbation import MaskSpace, check_mask_space, mask_needs, model_inputs
from evaluation.registry import register

__all__ = ["ADCC", "ADCCTerms"]


@dataclass(frozen=True)
class ADCCTerms:
    """ADCC's three terms per sample ``(B,)`` float64, and what makes a sample undefined."""

    coherency: Tensor
    complexity: Tensor
    average_drop: Tensor
    constant: Tensor  # bool: the map is constant
    constant_again: Tensor  # bool: the re-explained map is constant or not finite
    certain_miss: Tensor  # bool: y = 0


@register
class ADCC(Metric):
    """ADCC (see the module). Needs the model, a re-explainer and, in pixel space, the model's black. Higher is better."""

    name, direction, category, normalise = "adcc", "higher", "classification", False

    def __init__(self, mask_space: MaskSpace = "pixel") -> None:
        self.mask_space = check_mask_space(self.name, mask_space)

    @property
    def needs(self) -> frozenset[Need]:
        return mask_needs(self.mask_space) | {Need.EXPLAINER}

    def terms(self, batch: Batch) -> ADCCTerms:
        """Coherency, Complexity and AvgDrop of ``batch``'s maps (the masked forward pass shared with AD/AI/AG)."""
        images, _, targets = model_inputs(self.name, batch)
        (explainer,) = batch.require(self.name, "explainer")
        masked = masked_confidence(self, batch, self.mask_space)
        saliency = masked.saliency
        black = batch.black if self.mask_space == "pixel" else None
        again = explainer(mask_images(images, saliency, black), targets).detach()
        if again.shape != saliency.shape:
            raise ValueError(f"{self.name}: the explainer returned maps {tuple(again.shape)}, "
                             f"expected {tuple(saliency.shape)}")
        a = flat(saliency)
        b = flat(again).to(a.device)
        a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
        pearson = safe_divide((a * b).sum(dim=1), a.norm(dim=1) * b.norm(dim=1)).clamp(-1, 1)
        p, o = masked.p.to(a.device), masked.o.to(a.device)
        return ADCCTerms(
            coherency=(pearson + 1) / 2,
            complexity=flat(saliency).abs().sum(dim=1) / a.shape[1],
            average_drop=safe_divide((p - o).clamp(min=0), p),
            constant=masked.constant.to(a.device),
            constant_again=(b.norm(dim=1) == 0) | ~torch.isfinite(b).all(dim=1),
            certain_miss=p == 0,
        )

    def score(self, batch: Batch) -> Tensor:
        t = self.terms(batch)
        terms = torch.stack([t.coherency, 1 - t.complexity, 1 - t.average_drop], dim=1)
        zero = (terms <= 0).any(dim=1)
        adcc = 3 / (1 / terms.masked_fill(zero[:, None], 1)).sum(dim=1)
        undefined = torch.zeros_like(zero)
        for mask, reason in (
            (t.constant, "constant map"),
            (t.constant_again, "the re-explained masked image has a constant or non-finite map: no correlation"),
            (t.certain_miss, "y = 0: the average drop divides by zero"),
            (zero, "coherency 0 or average drop 1: a term of the harmonic mean is 0"),
        ):
            adcc = mark_undefined(adcc, mask & ~undefined, self.name, reason)
            undefined = undefined | mask
        return adcc
