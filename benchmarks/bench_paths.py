"""Time Integrated Gradients, Blur IG and Guided IG against PAIR saliency on the same model, images and
steps, side by side in one run, and IDGI over each against its base method.

    python benchmarks/bench_paths.py                                  # ResNet-18 (random weights), 224², 4 images
    python benchmarks/bench_paths.py --images 2 --steps 8 --repeats 1  # a quick check

Goals on CPU: camgrid ≤ 0.25× PAIR per image; IDGI ≤ 1.1× its base method. PAIR runs each image
alone (its API takes one image) with ``--pair-batch`` path points per call to the model (IG and
Blur IG; PAIR's default is 1, Guided IG always sends one); camgrid batches ``--batch-size`` points
across steps and images.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from attribution.methods import create_method
from attribution.models import load_model

try:
    import saliency.core as pair
    from saliency.core.base import INPUT_OUTPUT_GRADIENTS
except ImportError:  # the comparison needs the test extra
    pair = None

METHODS = ("integrated_gradients", "blur_ig", "guided_ig")


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` rounds, after one warm-up round; the functions take
    turns within a round, so a change in the machine's load affects them alike."""
    times: dict[str, list[float]] = {key: [] for key in fns}
    for round_ in range(repeats + 1):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def pair_call(model: torch.nn.Module, target: int) -> Callable:
    """PAIR's ``call_model_function``: the target's probability gradient on a channels-last batch."""

    def call(batch, call_model_args=None, expected_keys=None):
        x = torch.tensor(np.asarray(batch).transpose(0, 3, 1, 2), dtype=torch.float32).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x).softmax(1)[:, target].sum(), x)
        return {INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).numpy()}

    return call


def pair_run(name: str, model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, black: np.ndarray,
             steps: int, batch: int) -> None:
    """PAIR's attribution of each image in turn, with the same parameters as camgrid's."""
    for image, target in zip(images, targets.tolist()):
        x = image.permute(1, 2, 0).numpy()
        baseline = np.broadcast_to(black, x.shape).astype(np.float32)
        call = pair_call(model, target)
        if name == "integrated_gradients":
            pair.IntegratedGradients().GetMask(x, call, x_baseline=baseline, x_steps=steps, batch_size=batch)
        elif name == "blur_ig":
            pair.BlurIG().GetMask(x, call, steps=steps, batch_size=batch)
        else:
            pair.GuidedIG().GetMask(x, call, x_baseline=baseline, x_steps=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=16, help="the same steps for every method and PAIR")
    parser.add_argument("--batch-size", type=int, default=32, help="camgrid's points per forward/backward")
    parser.add_argument("--pair-batch", type=int, default=1, help="PAIR's points per call (IG, Blur IG)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--allocator", choices=["retained", "default"], default="retained",
                        help="retained: jobs.devices.retain_freed_memory, as camgrid's CPU processes run (both sides "
                             "share this process); default: glibc's thresholds")
    args = parser.parse_args()
    if args.allocator == "retained":
        from jobs.devices import retain_freed_memory

        retain_freed_memory()

    torch.manual_seed(0)
    loaded = load_model(args.model, weights="none")
    model, layer = loaded.model, loaded.layer
    black = loaded.preprocessing.black
    images = torch.randn(args.images, 3, args.size, args.size)
    targets = torch.arange(args.images) % 10
    print(f"{args.model} (random weights), {args.images} images 3×{args.size}², steps {args.steps}, camgrid "
          f"batch {args.batch_size} points, PAIR batch {args.pair_batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'method':<22}{'camgrid s/img':>14}{'PAIR s/img':>12}{'ratio':>8}{'+IDGI s/img':>13}{'IDGI ×':>8}")
    baseline = np.asarray(black, dtype=np.float32)
    for name in args.methods.split(","):
        params = {"steps": args.steps, "batch_size": args.batch_size}
        if name != "blur_ig":
            params["black"] = black
        base = create_method(name, **params).bind(model, layer)
        with_idgi = create_method(name, idgi=True, **params).bind(model, layer)
        fns = {"ours": partial(base, images, targets), "idgi": partial(with_idgi, images, targets)}
        if pair is not None:
            fns["pair"] = partial(pair_run, name, model, images, targets, baseline, args.steps, args.pair_batch)
        seconds = {key: value / args.images for key, value in timed(fns, args.repeats).items()}
        ours, idgi, theirs = seconds["ours"], seconds["idgi"], seconds.get("pair", float("nan"))
        print(f"{name:<22}{ours:>14.3f}{theirs:>12.3f}{ours / theirs:>8.2f}{idgi:>13.3f}{idgi / ours:>8.2f}")


if __name__ == "__main__":
    main()
