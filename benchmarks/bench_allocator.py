"""CPU methods with glibc's default allocator thresholds against :func:`jobs.devices.retain_freed_memory`.

Each setting runs in its own child process (the thresholds cannot be put back once raised): Score-CAM and
Integrated Gradients on EfficientNet-Lite0 (the packaged weights) at ``blocks.5`` for a batch of random images;
wall, user and system seconds, and the ratio ``retained / default`` of wall time (below 1: faster).

    python benchmarks/bench_allocator.py                  # about a minute on 2 cores
    python benchmarks/bench_allocator.py --images 4 --methods scorecam
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, os, sys, time
import torch
from attribution.methods import create_method
from attribution.models import load_model
from jobs.devices import retain_freed_memory

retain, method, images = sys.argv[1] == "retained", sys.argv[2], int(sys.argv[3])
if retain:
    assert retain_freed_memory()
torch.manual_seed(0)
loaded = load_model("efficientnet_lite0", "package")
options = {"black": loaded.preprocessing.black} if method == "integrated_gradients" else {}
bound = create_method(method, **options).bind(loaded.model, "blocks.5")
x = torch.randn(images, 3, 224, 224)
before, start = os.times(), time.perf_counter()
bound(x)
after = os.times()
print(json.dumps({"wall": time.perf_counter() - start, "user": after.user - before.user,
                  "sys": after.system - before.system}))
"""


def measure(setting: str, method: str, images: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, setting, method, str(images)], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="scorecam,integrated_gradients")
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args()
    print(f"{'method':<22} {'setting':<9} {'wall s':>7} {'user s':>7} {'sys s':>7}")
    for method in args.methods.split(","):
        results = {setting: measure(setting, method, args.images) for setting in ("default", "retained")}
        for setting, r in results.items():
            print(f"{method:<22} {setting:<9} {r['wall']:7.1f} {r['user']:7.1f} {r['sys']:7.1f}")
        print(f"{method:<22} retained / default wall = {results['retained']['wall'] / results['default']['wall']:.2f}")


if __name__ == "__main__":
    main()
