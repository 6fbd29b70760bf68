"""Time each CAM method against pytorch-grad-cam on the same model and batch, and Expected Grad-CAM
against our Grad-CAM; report peak memory. Ratios are measured side by side in one run.

    python benchmarks/bench_methods.py                     # ResNet-50, 224×224, batch 4
    python benchmarks/bench_methods.py --model resnet18 --batch 2 --repeats 3

Goals: ours ≤ 1.0× pytorch-grad-cam for the gradient CAMs, ≤ 0.5× for Score-CAM;
Expected Grad-CAM ≤ 3× Grad-CAM per image on ResNet-50 (the paper reports 19×).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import torch

from attribution.methods import create_method
from attribution.models import load_model

try:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except ImportError:  # the comparison needs the test extra
    pgc = None

PEERS = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "ablationcam": "AblationCAM",
    "scorecam": "ScoreCAM",
}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median seconds over ``repeats`` runs (after one warm-up), and the peak resident memory above
    the starting level during those runs (MiB, sampled every 2 ms: tracemalloc misses torch tensors)."""
    fn()
    base, peak, done = _rss_mib(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib() - base)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    done.set()
    sampler.join()
    return statistics.median(times), peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(PEERS))
    parser.add_argument("--references", type=int, default=16)
    parser.add_argument("--egc-chunks", default="128", help="Expected Grad-CAM suffix rows per chunk to compare")
    args = parser.parse_args()

    torch.manual_seed(0)
    loaded = load_model(args.model, weights="none")
    model, layer = loaded.model, loaded.layer
    x = torch.randn(args.batch, 3, args.size, args.size)
    targets = torch.arange(args.batch) % 10
    print(f"{args.model} layer {layer}, batch {args.batch}×3×{args.size}², torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'method':<18}{'ours s':>9}{'peer s':>9}{'ratio':>8}{'ours ΔMiB':>10}{'peer ΔMiB':>10}")
    for name in args.methods.split(","):
        method = create_method(name)
        ours, ours_mem = timed(lambda: method(model, layer, x, targets), args.repeats)
        peer, peer_mem = float("nan"), float("nan")
        if pgc is not None and name in PEERS:
            target_layer = model.get_submodule(layer)
            cam = getattr(pgc, PEERS[name])(model=model, target_layers=[target_layer])
            wanted = [ClassifierOutputTarget(int(t)) for t in targets]
            if name == "scorecam":
                cam.batch_size = 64  # same chunk as ours
            peer, peer_mem = timed(lambda: cam(input_tensor=x, targets=wanted), args.repeats)
        print(f"{name:<18}{ours:>9.3f}{peer:>9.3f}{ours / peer:>8.2f}{ours_mem:>10.1f}{peer_mem:>10.1f}")

    reference = torch.randn(args.references, 3, args.size, args.size)
    gradcam = create_method("gradcam")
    g, g_mem = timed(lambda: gradcam(model, layer, x[:1], targets[:1]), args.repeats)
    k = loaded.spec.channels
    print(f"\nper image, Grad-CAM {g:.3f} s; Expected Grad-CAM (M = 2K = {2 * k}, paper: 19×):")
    for chunk in map(int, args.egc_chunks.split(",")):
        expected = create_method("expected_gradcam", reference=reference, batch_size=chunk)
        e, e_mem = timed(lambda: expected(model, layer, x[:1], targets[:1]), args.repeats)  # warm-up builds M̂
        print(f"  chunk {chunk:>5} rows: {e:.3f} s = {e / g:.2f}× Grad-CAM; peak memory above baseline "
              f"{e_mem:.0f} vs {g_mem:.0f} MiB")


if __name__ == "__main__":
    main()
