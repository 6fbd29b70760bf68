"""Channels-last against contiguous weights, per registered CNN: the evidence behind each registry entry's
``channels_last`` flag.

For each architecture, a forward pass (Score-CAM's, the metrics' masked copies) and a forward + backward pass
(the gradient methods') of a batch of random images, in the two memory formats, on the same model in the same
run; the ratio ``channels_last / contiguous`` below 1 means channels-last is faster. Random weights: the format
changes the kernels, not the arithmetic, so the weights do not matter.

    python benchmarks/bench_memory_format.py                       # every registered CNN, about five minutes on 2 cores
    python benchmarks/bench_memory_format.py --models efficientnet_lite0,vgg16 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attribution.layout import SpatialLayout  # noqa: E402
from attribution.models import ARCHITECTURES, architecture  # noqa: E402


def seconds(model: torch.nn.Module, images: torch.Tensor, backward: bool, repeats: int) -> float:
    """Median seconds per image of ``repeats`` passes (after one warm-up)."""
    def once() -> float:
        x = images.clone().requires_grad_(backward)
        start = time.perf_counter()
        if backward:
            model(x)[:, 0].sum().backward()
        else:
            with torch.inference_mode():
                model(x)
        return (time.perf_counter() - start) / len(images)

    once()
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cnns = [name for name, a in ARCHITECTURES.items() if isinstance(a.layout, SpatialLayout)]
    parser.add_argument("--models", default=",".join(cnns), help="comma-separated registry names")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'model':<22} {'flag':>5} {'fwd contiguous':>15} {'fwd ch-last':>12} {'ratio':>6}"
          f" {'f+b contiguous':>15} {'f+b ch-last':>12} {'ratio':>6}   (ms per image, batch {args.batch})")
    for name in args.models.split(","):
        spec = architecture(name)
        model = spec.build(1000).eval()
        size = 299 if name == "inception_v3" else 224
        images = torch.randn(args.batch, 3, size, size)
        row = []
        for backward in (False, True):
            model.to(memory_format=torch.contiguous_format)
            contiguous = seconds(model, images, backward, args.repeats)
            model.to(memory_format=torch.channels_last)
            last = seconds(model, images, backward, args.repeats)
            row += [contiguous * 1e3, last * 1e3, last / contiguous]
        print(f"{name:<22} {str(spec.channels_last):>5} {row[0]:15.1f} {row[1]:12.1f} {row[2]:6.2f}"
              f" {row[3]:15.1f} {row[4]:12.1f} {row[5]:6.2f}", flush=True)


if __name__ == "__main__":
    main()
