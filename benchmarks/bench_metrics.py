"""Seconds per sample of each native (batched torch) metric against Quantus on the same model, images
and maps, measured side by side in one run; every pair is checked for equal values first.

    python benchmarks/bench_metrics.py                                  # CIFAR-scale CNN, 48×48, batch 16
    python benchmarks/bench_metrics.py --model efficientnet_lite0 --size 240 --batch 4 --steps 60 --patch 60 --samples 4

Quantus is given the settings that make its values equal ours: per-sample normalisation, features
in step = 3 × our pixels per step, and — for the random robustness metrics — the very noise our
per-sample generators draw (replayed through its ``perturb_func``). The Grad-CAM maps of the model
are the maps scored, and Grad-CAM re-explains for the robustness metrics.

Goal: ≥ 10× faster per sample on CPU at equal values. Where a metric's cost is the
model's forward passes (the curves on a large model), batching cannot beat the FLOPs; the report
says so per metric. The shared computations (one deletion curve for Insertion/Deletion/Pixel
Flipping, one set of re-explanations for Max- and Avg-Sensitivity) are timed as pairs too. The
*floor* column is the cost of the model evaluations a metric cannot avoid: its forward passes (or
re-explanations) × the time of one, measured on channels-last batches of the default rows per pass.
The last column is the largest difference between the two, relative to the largest value.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import quantus
import torch
from torch import nn

from attribution.methods import GradCAM
from attribution.methods.base import sample_generators
from attribution.postprocess import scored_map
from evaluation import Batch, create_metric
from evaluation.perturbation import class_scores, rows_per_pass


class SmallCNN(nn.Module):
    """A CIFAR-scale network: three conv blocks (target ``features``), GAP, linear."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def setup(args):
    torch.manual_seed(0)
    if args.model == "small":
        model, layer = SmallCNN().eval(), "features"
    else:
        from attribution.models import load_model

        loaded = load_model(args.model, "pretrained" if args.model.startswith("efficientnet_lite") else "none")
        model, layer = loaded.model, loaded.layer
    images = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(images).argmax(1)
    method = GradCAM()

    def explainer(x, t):
        return scored_map(method(model, layer, x, t), (args.size, args.size))

    maps = explainer(images, targets)
    # Grad-CAM's ReLU leaves exact zeros; a tiny tie-breaker gives both sides one ranking (Quantus's
    # argsort orders ties arbitrarily, ours in raster order)
    maps = maps + 1e-6 * maps.amax() * torch.rand(maps.shape, generator=torch.Generator().manual_seed(2))
    return model, images, targets, explainer, maps


def per_sample(fn, batch: int, repeats: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best / batch, value


def replaying(noise):
    steps = iter(noise)
    return lambda arr, indices, **_: arr + next(steps).reshape(arr.shape).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", help="'small' or a registry architecture")
    parser.add_argument("--size", type=int, default=48, help="Quantus needs 3 × pixels per step to divide H·W")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=48, help="curve steps (pixels per step = H·W / steps)")
    parser.add_argument("--patch", type=int, default=4, help="Infidelity patch size")
    parser.add_argument("--samples", type=int, default=20, help="perturbations per robustness metric")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated metric names")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model, images, targets, explainer, maps = setup(args)
    b, hw = len(images), args.size * args.size
    pixels = -(-hw // args.steps)
    per = {"normalise_func": quantus.normalise_by_max, "normalise_func_kwargs": {"normalise_axes": (1, 2, 3)}}
    seeds = torch.arange(b)
    x, y, a = images.numpy(), targets.numpy(), maps[:, None].numpy()
    a_rgb = maps[:, None].expand(-1, 3, -1, -1).numpy()  # Quantus asserts features_in_step | size of a

    def quantus_explain(model, inputs, targets, **_):
        return explainer(torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()[:, None]

    def q(metric, attributions=a, **extra):
        return lambda: np.asarray(
            metric(model=model, x_batch=x, y_batch=y, a_batch=attributions, device="cpu", batch_size=b, **extra),
            dtype=np.float64,
        )

    def ours(name, **params):
        metric = create_metric(name, **params)
        return lambda: metric(
            maps, images=images, model=model, targets=targets, explainer=explainer, seeds=seeds
        ).numpy()

    def robust(name, cls, **extra):
        metric = create_metric(name, nr_samples=args.samples)
        generators = sample_generators(metric.seed, seeds, b)
        noise = [torch.stack([metric.draw(g, images.shape[1:]) for g in generators]) for _ in range(args.samples)]
        return (
            ours(name, nr_samples=args.samples),
            lambda: q(
                cls(nr_samples=args.samples, perturb_func=replaying(noise), disable_warnings=True, **extra),
                explain_func=quantus_explain,
            )(),
        )

    def flipping_auc(values):  # Quantus integrates with dx = 1 over S points; ours over [0, 1]
        return values * (-(-hw // pixels) - 1)

    cases = {
        "pixel_flipping": (
            ours("pixel_flipping", steps=args.steps, baseline="min"),
            q(
                quantus.PixelFlipping(
                    features_in_step=3 * pixels, return_auc_per_sample=True, disable_warnings=True, **per
                ),
                a_rgb,
            ),
            flipping_auc,
        ),
        "faithfulness_estimate": (
            ours("faithfulness_estimate", steps=args.steps, baseline="min"),
            q(quantus.FaithfulnessEstimate(features_in_step=3 * pixels, disable_warnings=True, **per), a_rgb),
            None,
        ),
        "infidelity": (
            ours("infidelity", patch_sizes=(args.patch,), baseline="min"),
            q(quantus.Infidelity(perturb_patch_sizes=[args.patch], disable_warnings=True)),
            None,
        ),
        "max_sensitivity": robust("max_sensitivity", quantus.MaxSensitivity) + (None,),
        "avg_sensitivity": robust("avg_sensitivity", quantus.AvgSensitivity) + (None,),
        "local_lipschitz_estimate": robust("local_lipschitz_estimate", quantus.LocalLipschitzEstimate, **per) + (None,),
        "relative_input_stability": robust("relative_input_stability", quantus.RelativeInputStability) + (None,),
        "relative_output_stability": robust("relative_output_stability", quantus.RelativeOutputStability) + (None,),
    }
    # the floor: seconds per image of the model evaluations a metric cannot avoid (channels-last batches
    # of the metrics' default rows per pass)
    n = rows_per_pass(None, images.device)
    rows = images.repeat(-(-n // b), 1, 1, 1)[:n].contiguous(memory_format=torch.channels_last)
    forward, _ = per_sample(lambda: class_scores(model, rows, softmax=False), n, 3)
    explain, _ = per_sample(lambda: explainer(rows, targets.repeat(-(-n // b))[:n]), n, 3)
    curve_points = -(-hw // pixels) + 1
    blocks = (-(-args.size // args.patch)) ** 2 + 1
    floor = {
        "pixel_flipping": curve_points * forward,
        "faithfulness_estimate": curve_points * forward,
        "infidelity": blocks * forward,
        "max_sensitivity": args.samples * explain,
        "avg_sensitivity": args.samples * explain,
        "local_lipschitz_estimate": args.samples * explain,
        "relative_input_stability": args.samples * (explain + forward),
        "relative_output_stability": args.samples * (explain + forward),
    }
    only = [n for n in args.only.split(",") if n]
    print(
        f"model={args.model} images={b}×3×{args.size}² threads={torch.get_num_threads()} "
        f"steps={args.steps} ({pixels} px/step) patch={args.patch} perturbations={args.samples}"
    )
    print(f"forward {forward * 1e3:.2f} ms/img, Grad-CAM re-explanation {explain * 1e3:.2f} ms/img")
    print(
        f"{'metric':28s} {'native s/img':>13s} {'Quantus s/img':>14s} {'speed-up':>9s} {'floor s/img':>12s} "
        f"{'rel. diff':>10s}"
    )
    for name, (native, peer, convert) in cases.items():
        if only and name not in only:
            continue
        t_ours, v_ours = per_sample(native, b, args.repeats)
        t_q, v_q = per_sample(peer, b, 1 if name.endswith(("sensitivity", "estimate", "stability")) else args.repeats)
        v_cmp = convert(v_ours) if convert else v_ours
        diff = np.nanmax(np.abs(v_cmp - v_q)) / np.nanmax(np.abs(v_q))
        print(
            f"{name:28s} {t_ours:13.4f} {t_q:14.4f} {t_q / t_ours:8.1f}× {floor[name]:12.4f} {diff:10.1e}", flush=True
        )

    if not only:  # shared computations: three curve metrics on one deletion curve; two sensitivities on one draw

        def curves():
            batch = Batch(maps, images=images, model=model, targets=targets)
            return [create_metric(n, steps=args.steps, baseline="min")(batch)
                    for n in ("deletion", "insertion", "pixel_flipping")]

        def sensitivities():
            batch = Batch(maps, images=images, model=model, targets=targets, explainer=explainer, seeds=seeds)
            return [create_metric(n, nr_samples=args.samples)(batch) for n in ("max_sensitivity", "avg_sensitivity")]

        t_curves, _ = per_sample(curves, b, args.repeats)
        t_sens, _ = per_sample(sensitivities, b, args.repeats)
        print(
            f"shared: deletion + insertion + pixel flipping {t_curves:.4f} s/img; "
            f"max + avg sensitivity {t_sens:.4f} s/img"
        )


if __name__ == "__main__":
    main()
