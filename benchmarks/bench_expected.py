"""Expected Grad-CAM against Grad-CAM per image, side by side in one run, and the one-off cost of
its reference features and second-moment matrix ``M̂`` per channel count ``K``.

    python benchmarks/bench_expected.py                          # resnet50, efficientnet_b0, vgg16 on the CPU
    python benchmarks/bench_expected.py --archs vit_b_16         # ViT-B/16's general route (heavy on a CPU)
    python benchmarks/bench_expected.py --device cuda --images 2 --repeats 3

Part 1, per image: random-weight registry models (``load_model(name, "none")``: weights do not change
timing), the registry's layer and layout, a ``(B, 3, S, S)`` input at the model's crop size. Expected
Grad-CAM runs at ``M = 2K`` (closed form, default ``batch_size`` and ``fast_path=True``) on precomputed
reference features ``torch.rand(2K, K)`` (``R = 2K`` distinct, ``M̂`` full rank). Each method is built
once; ``M̂`` and its factor are built before timing (their time is reported apart), one warm-up call
follows, then ``--repeats`` timed calls: the median divided by ``B`` is the per-image time. Where a
fast route of ``g`` applies, Expected Grad-CAM also runs with ``fast_path=False`` (same ``M``).
The calls of one model are timed in rounds (each round times every method once, in turn), so the methods
compared share the same stretches of load on a shared machine. On the general route, probes at one and two
suffix chunks estimate a call as ``a + b·M``; a call estimated over ``--max-seconds`` is timed at a fraction of
``M`` (estimated at half the limit) and extrapolated linearly in ``M`` (the output says so). On the CPU the
default is one thread: with the cores shared, two OpenMP threads stall at every barrier under outside load.

Part 2, per ``K``: reference features ``h(x')`` of a batch of images, extrapolated to ``R = 2K + K``
(fit pool plus held-out pool), and ``M̂`` = ``data_aware_perturbations`` + ``SecondMoment.of`` +
``.projection`` (float64, on the CPU as the method builds it), timed fully.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` of a steady-state call; on the CPU the peak RSS of
one steady-state call in a fresh process per (arch, method) (``VmHWM`` reset through ``/proc/self/clear_refs``,
glibc's mmap threshold pinned low so freed tensors leave the RSS; tracemalloc does not see torch's memory).

Goals: Expected Grad-CAM ≤ 1.5× Grad-CAM on ResNet-50 and EfficientNet-B0 (the affine route),
≤ 3× on VGG-16 (the stem route) and ViT-B/16 (the general route).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import textwrap
import time
import warnings

import torch

from attribution.channel_scaling import (
    ChannelScaling,
    RankDeficientWarning,
    SecondMoment,
    data_aware_perturbations,
    reference_features,
)
from attribution.methods import create_method
from attribution.methods.base import forward_pass
from attribution.models import ARCHITECTURES, load_model
from attribution.split import split_at

try:  # matmul/conv FLOPs, counted by torch's own per-op formulas (no module hooks: those break autograd.grad)
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry
except ImportError:  # pragma: no cover - older torch
    TorchDispatchMode, flop_registry = None, None

TARGETS = {  # arch: (max EGC/Grad-CAM per image, the route it is meant for)
    "resnet50": (1.5, "affine route"),
    "efficientnet_b0": (1.5, "affine route"),
    "vgg16": (3.0, "stem route"),
    "vit_b_16": (3.0, "general route"),
}
FEATURE_MODELS = {512: "resnet18", 1280: "efficientnet_b0", 2048: "resnet50"}
MMAP_THRESHOLD = 65536  # glibc: allocations ≥ 64 KiB are mmapped and unmapped on free, so RSS follows live tensors


# -- measuring -------------------------------------------------------------------------------------------


def _native_mha_flops(query, key, value, embed_dim, num_heads, *args, **kwargs) -> int:
    """nn.MultiheadAttention's fused no-grad kernel: QKV and output projections, scores and weighted sum."""
    b, length, e = query.shape
    return 2 * b * length * e * 4 * e + 4 * b * length * key.shape[1] * e


def _cpu_sdpa_flops(query, key, *args, **kwargs) -> int:
    """``softmax(QKᵀ)V`` on ``(B, H, L, D)``: two batched matmuls."""
    return 4 * query.shape[:-1].numel() * key.shape[-2] * query.shape[-1]


def _extra_flop_formulas() -> dict:
    """CPU kernels torch has no formula for: the fused MHA (ViT under no_grad) and the CPU flash SDPA."""
    aten, extra = torch.ops.aten, {}
    for name, formula in (("_native_multi_head_attention", _native_mha_flops),
                          ("_scaled_dot_product_flash_attention_for_cpu", _cpu_sdpa_flops),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward",
                           lambda grad, query, key, *a, **k: 2 * _cpu_sdpa_flops(query, key))):
        if hasattr(aten, name):
            extra[getattr(aten, name)] = formula
    return extra


class FlopCount(TorchDispatchMode if TorchDispatchMode is not None else object):
    """Total FLOPs of the matmuls/convolutions/attention run inside (elementwise work is not counted)."""

    extra = None

    def __init__(self):
        super().__init__()
        self.total = 0
        if FlopCount.extra is None:
            FlopCount.extra = _extra_flop_formulas()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        count = flop_registry.get(packet)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        elif packet in self.extra:
            self.total += self.extra[packet](*args, **kwargs)
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def counted(fn, device: torch.device) -> tuple[float, float | None]:
    """One (warm-up) call: its seconds and its matmul/conv FLOPs (``None`` if counting is unavailable)."""
    if flop_registry is None:
        return clock(fn, device), None
    counter = FlopCount()
    with counter:
        seconds = clock(fn, device)
    return seconds, float(counter.total)


class quiet_rank_warnings:
    """Probes at M < K give a rank-deficient M̂ on purpose; silence its warning and log line."""

    def __enter__(self):
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore", RankDeficientWarning)
        self.logger = logging.getLogger("attribution")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        self.warnings.__exit__(*exc)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _reset_peak_rss() -> bool:
    """Reset VmHWM (and ru_maxrss) to the current RSS (Linux ≥ 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# -- one configuration -----------------------------------------------------------------------------------


class Bench:
    """One registry model, its input, and Grad-CAM / Expected Grad-CAM calls on it."""

    def __init__(self, arch: str, images: int, device: torch.device):
        torch.manual_seed(0)
        self.arch, self.device = arch, device
        self.loaded = load_model(arch, "none", device=device)
        self.model, self.layer, self.layout = self.loaded.model, self.loaded.layer, self.loaded.layout
        self.size = self.loaded.preprocessing.crop
        self.channels = self.loaded.spec.channels
        self.x = torch.randn(images, 3, self.size, self.size, device=device)
        self.targets = torch.arange(images, device=device)
        self.features = torch.rand(2 * self.channels, self.channels, generator=torch.Generator().manual_seed(0))
        self.chunk = create_method("expected_gradcam").batch_size
        self.step = max(1, self.chunk // images)  # perturbations per suffix chunk on the general route

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def route(self, fast_path: bool) -> str:
        split = split_at(self.model, self.layer, self.layout)
        base = forward_pass(split, self.x, self.targets)
        return ChannelScaling(split, base.feats, base.live, base.layout, base.targets, fast_path=fast_path).route

    def method(self, kind: str, fast_path: bool = True, m: int | None = None):
        if kind == "gradcam":
            return create_method("gradcam")
        return create_method("expected_gradcam", reference_features=self.features, n_perturbations=m,
                             fast_path=fast_path)

    def call(self, method):
        return lambda: method(self.model, self.layer, self.x, self.targets, layout=self.layout)

    def prepare(self, kind: str, fast_path: bool = True, m: int | None = None, warm_up: bool = True) -> dict:
        """Build the method (M̂ before any timing, timed apart) and make its counted warm-up call."""
        method = self.method(kind, fast_path, m)
        out = {"M": m, "build_s": None, "method": method, "times": [], "first_s": None, "flops": None}
        with quiet_rank_warnings():
            if kind == "egc":
                out["build_s"] = clock(lambda: method.diagnostics(self.model, self.layer, layout=self.layout,
                                                                  device=self.device), self.device)
            if warm_up:
                out["first_s"], out["flops"] = counted(self.call(method), self.device)
        return out

    def rounds(self, entries: list[dict], repeats: int) -> None:
        """``repeats`` rounds, each timing one call of every entry in turn: the methods compared share the
        same stretches of machine load (the CPU is shared), then each gets its median."""
        with quiet_rank_warnings():
            for _ in range(repeats):
                for entry in entries:
                    entry["times"].append(clock(self.call(entry["method"]), self.device))
        for entry in entries:
            entry["median_s"] = statistics.median(entry["times"])


def plan_general(bench: Bench, fast_path: bool, max_seconds: float) -> tuple[dict, dict, float]:
    """General route: probes at 1 and 2 suffix chunks estimate one call at M = 2K as ``a + b·M`` (fastest of
    two calls each, the least disturbed by other load). Returns the 1-chunk probe (kept, timed again in the
    rounds to fit the line), the entry to time (M = 2K, or a fraction of it when the estimate exceeds
    ``max_seconds``) and the estimate."""
    full = 2 * bench.channels
    m1, m2 = bench.step, 2 * bench.step
    probes = [bench.prepare("egc", fast_path, m) for m in (m1, m2)]
    for p in probes:
        with quiet_rank_warnings():
            p["probe_s"] = min(clock(bench.call(p["method"]), bench.device) for _ in range(2))
    b = max((probes[1]["probe_s"] - probes[0]["probe_s"]) / (m2 - m1), 1e-9)
    a = max(probes[0]["probe_s"] - b * m1, 0.0)
    estimate = a + b * full
    p1 = probes[0]
    p1["flops_per_perturbation"] = None if p1["flops"] is None else (probes[1]["flops"] - p1["flops"]) / (m2 - m1)
    if estimate <= max_seconds:
        return p1, bench.prepare("egc", fast_path, full), estimate
    # a fraction of M whose call is estimated at half the limit; no warm-up call: the probes already ran
    # these chunk shapes, and its FLOPs are extrapolated from theirs
    m_part = max(m2 + bench.step, int((max_seconds / 2 - a) / b) // bench.step * bench.step)
    return p1, bench.prepare("egc", fast_path, m_part, warm_up=False), estimate


def finish_general(res: dict, p1: dict, full: int, estimate: float) -> None:
    """Line through the 1-chunk probe and the timed entry (same rounds): the per-perturbation cost, and the
    extrapolation to M = 2K when the entry ran at a fraction of it."""
    m1, m = p1["M"], res["M"]
    b = (res["median_s"] - p1["median_s"]) / (m - m1)
    a = p1["median_s"] - b * m1
    res.update(slope=b, intercept=a, probe_M=m1, probe_median_s=p1["median_s"], estimate_s=estimate,
               flops_per_perturbation=p1["flops_per_perturbation"], M_timed=m, extrapolated=m != full)
    if m != full:
        res.update(M=full, timed_median_s=res["median_s"], median_s=a + b * full, first_s=None)
        if p1["flops"] is not None and p1["flops_per_perturbation"] is not None:
            res["flops"] = p1["flops"] + p1["flops_per_perturbation"] * (full - m1)


# -- memory: a fresh process per (arch, method) ------------------------------------------------------------


def memory_child(spec: dict) -> dict:
    """In a fresh process: RSS growth that stays after the warm-up (M̂, factor, perturbations) and the peak RSS
    of one steady-state call above the level before it (VmHWM reset through /proc/self/clear_refs)."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    bench = Bench(spec["arch"], spec["images"], device)
    bench.route(True)  # trace the split and run the model once: library and tracing state is not the method's
    method = bench.method(spec["kind"], spec["fast_path"], spec["M"])
    gc.collect()
    before = _status_kib("VmRSS")
    with quiet_rank_warnings():
        if spec["kind"] == "egc":
            method.diagnostics(bench.model, bench.layer, layout=bench.layout, device=device)
        bench.call(method)()  # warm-up: builds M̂ and P, traces the split
        gc.collect()
        level = _status_kib("VmRSS")
        reset = _reset_peak_rss()
        start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        bench.call(method)()
        peak = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"state_mib": (level - before) / 1024, "peak_mib": (peak - level) / 1024, "hwm_reset": reset,
            "lower_bound": not reset and start_max >= peak}


def run_memory_child(spec: dict, timeout: float) -> dict | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_="0")
    try:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", json.dumps(spec)],
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cuda_peak(bench: Bench, kind: str, fast_path: bool, m: int) -> dict:
    """On CUDA: max_memory_allocated of one steady-state call above the allocation before it."""
    method = bench.method(kind, fast_path, m)
    before = torch.cuda.memory_allocated(bench.device)
    with quiet_rank_warnings():
        bench.call(method)()
        torch.cuda.synchronize(bench.device)
        level = torch.cuda.memory_allocated(bench.device)
        torch.cuda.reset_peak_memory_stats(bench.device)
        bench.call(method)()
        torch.cuda.synchronize(bench.device)
    peak = torch.cuda.max_memory_allocated(bench.device)
    return {"state_mib": (level - before) / 2**20, "peak_mib": (peak - level) / 2**20}


# -- output ------------------------------------------------------------------------------------------------


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


COLUMNS = [("arch", "<15"), ("K", ">4"), ("S", ">3"), ("route", "<7"), ("method", "<19"), ("M", ">5"),
           ("s/img", ">7"), ("×GC", ">6"), ("GFLOP/img", ">9"), ("×GC", ">6"), ("1st call s", ">10"),
           ("M̂ build s", ">10"), ("peak MiB", ">9"), ("state MiB", ">9")]


def row(values) -> str:
    return " ".join(format(v, spec) for v, (_, spec) in zip(values, COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="resnet50,efficientnet_b0,vgg16",
                        help="registry models (comma-separated); vit_b_16 is heavy on a CPU, so not a default")
    parser.add_argument("--images", type=int, default=1, help="batch size B of each call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (median)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--features-k", default="512,1280,2048",
                        help="channel counts K for part 2 ('' skips it); 512 resnet18, 1280 efficientnet_b0, "
                             "2048 resnet50, else the first registry model with K channels")
    parser.add_argument("--feature-images", type=int, default=32, help="images timed for h(x') per K")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="a single call estimated above this is timed at a fraction of M and extrapolated")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: 1 on the CPU, whose cores are shared, where two "
                             "OpenMP threads stall on every barrier under outside load; torch's default on CUDA)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads > 0:
        torch.set_num_threads(threads)
    archs = [a for a in args.archs.split(",") if a]
    for arch in archs:
        if arch not in ARCHITECTURES:
            parser.error(f"unknown registry architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    began = time.perf_counter()
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"torch {torch.__version__}, {hardware}, B = {args.images} image(s) per call, median of {args.repeats} "
          f"timed rounds (each round times every method once, in turn) after 1 warm-up; load average at start "
          f"{os.getloadavg()[0]:.2f}")
    if device.type == "cuda":
        memory_note = "peak MiB: torch.cuda.max_memory_allocated of one steady-state call above the allocation " \
                      "before it; state MiB: allocation the method keeps after its warm-up (M̂, factor, I)"
    else:
        memory_note = (f"peak MiB: peak RSS (VmHWM, reset via /proc/self/clear_refs) of one steady-state call above "
                       f"the RSS before it, in a fresh process per (arch, method) with glibc "
                       f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD} so freed tensors leave RSS; state MiB: RSS the "
                       f"method keeps after its warm-up (M̂, factor, P, perturbations I; the model was run and its "
                       f"split traced before the baseline)")
    print(textwrap.fill(f"threads: {torch.get_num_threads()} (--threads). GFLOP/img: matmul/conv/attention FLOPs "
                        "of one call (torch's flop formulas; elementwise work is not counted); ×GC: ratio to "
                        "Grad-CAM on the same arch. 1st call s: the warm-up call (M̂ is built before it, in "
                        "'M̂ build s': reference pool → perturbations → M̂, eigvalsh, Cholesky).", 118))
    print(textwrap.fill(memory_note, 118) + "\n")

    print("1. per image: Expected Grad-CAM (M = 2K, closed form) vs Grad-CAM, same model and input")
    print(row([c for c, _ in COLUMNS]))
    results, notes, memory_budget = {}, [], max(20.0, args.max_seconds)
    for arch in archs:
        bench = Bench(arch, args.images, device)
        fast_route = bench.route(True)
        configs = [("gradcam", True, "Grad-CAM", fast_route), ("egc", True, "Expected Grad-CAM", fast_route)]
        if fast_route != "general":
            configs.append(("egc", False, "EGC fast_path=False", "general"))
        measured, entries, general = {}, [], []
        for kind, fast_path, label, route in configs:
            if kind == "egc" and route == "general":
                p1, res, estimate = plan_general(bench, fast_path, args.max_seconds)
                entries.append(p1)
                general.append((res, p1, estimate))
            else:
                res = bench.prepare(kind, fast_path, 2 * bench.channels if kind == "egc" else None)
            res.update(label=label, route=route, kind=kind, fast_path=fast_path)
            measured[(kind, fast_path)] = res
            entries.append(res)
        bench.rounds(entries, args.repeats)
        for res, p1, estimate in general:
            finish_general(res, p1, 2 * bench.channels, estimate)
        for res in entries:
            res.pop("method")  # free M̂ and its factor before the memory children start
        gradcam = measured[("gradcam", True)]
        for res in measured.values():  # memory after all timings of the arch, so the children do not disturb them
            if args.no_memory:
                res["memory"] = None
                continue
            m = res["M"]
            if res["kind"] == "egc" and res["route"] == "general" and 2 * res["median_s"] > memory_budget:
                m = 2 * bench.step  # the general route's transient is one chunk: peak does not grow with M
                res["memory_M"] = m
            if device.type == "cuda":
                res["memory"] = cuda_peak(bench, res["kind"], res["fast_path"], m)
            else:
                spec = {"arch": arch, "kind": res["kind"], "fast_path": res["fast_path"], "M": m,
                        "images": args.images, "device": args.device, "threads": torch.get_num_threads()}
                res["memory"] = run_memory_child(spec, timeout=120 + 10 * res["median_s"])
        for res in measured.values():
            per_image = res["median_s"] / bench.batch
            ratio = res["median_s"] / gradcam["median_s"]
            flops = None if res["flops"] is None else res["flops"] / bench.batch / 1e9
            flop_ratio = None if res["flops"] is None or not gradcam["flops"] else res["flops"] / gradcam["flops"]
            mem = res.get("memory") or {}
            mark = ""
            if res.get("extrapolated"):
                mark = "*"
                notes.append(f"* {arch} {res['label']}: one call at M = {res['M']} was estimated at "
                             f"{res['estimate_s']:.1f} s (> --max-seconds {args.max_seconds:g}); timed at "
                             f"M = {res['M_timed']} ({res['timed_median_s']:.2f} s/call, no warm-up call: the probes "
                             f"ran the same chunk shapes) and extrapolated linearly "
                             f"through M = {res['probe_M']} ({res['probe_median_s']:.2f} s/call, same rounds): "
                             f"t = {res['intercept']:.2f} s + {1e3 * res['slope']:.2f} ms·M"
                             f"; FLOPs extrapolated the same way (exactly linear in M)")
            peak = "n/a" if "error" in mem else fmt(mem.get("peak_mib"), ".0f")
            if mem.get("lower_bound"):
                peak = "≥" + peak
            state = fmt(mem.get("state_mib"), ".0f") if res["kind"] == "egc" and "error" not in mem else "-"
            if res.get("memory_M"):
                peak, state = peak + "†", state + "†"
                notes.append(f"† {arch} {res['label']}: memory measured at M = {res['memory_M']} (the general "
                             f"route evaluates {bench.chunk} suffix rows at a time, so the per-call peak does not "
                             f"grow with M; state MiB is then that of M = {res['memory_M']}, the perturbations I "
                             f"add 8·M·K bytes: {8 * res['M'] * bench.channels / 2**20:.0f} MiB at M = {res['M']})")
            if "error" in mem:
                notes.append(f"{arch} {res['label']}: memory measurement failed: {mem['error']}")
            print(row([arch, bench.channels, bench.size, res["route"], res["label"],
                       fmt(res["M"], "d"), fmt(per_image, ".3f") + mark, fmt(ratio, ".2f"), fmt(flops, ".1f"),
                       fmt(flop_ratio, ".2f"), fmt(res["first_s"], ".2f"), fmt(res["build_s"], ".2f") + mark,
                       peak, state]))
        for res in measured.values():
            if res.get("slope") is not None and res["kind"] == "egc":
                share = res["slope"] * res["M"] / res["median_s"]
                per_flop = "" if res.get("flops_per_perturbation") is None else \
                    f", {res['flops_per_perturbation'] / 1e9:.3f} matmul GFLOP"
                notes.append(f"  {arch} {res['label']} (general route): each perturbation costs "
                             f"{1e3 * res['slope']:.2f} ms{per_flop} of suffix (line through M = {res['probe_M']} "
                             f"and M = {res['M_timed']}, same rounds); M × that = {share:.0%} of the call")
        results[arch] = (bench.batch, measured)
        del bench, entries, general
        gc.collect()
    for note in notes:
        print(note)

    print("\nfast path speed-up (same M):")
    if not any(("egc", False) in measured for _, measured in results.values()):
        print("  (no arch here has a fast route)")
    for arch, (batch, measured) in results.items():
        if ("egc", False) in measured:
            fast, slow = measured[("egc", True)], measured[("egc", False)]
            print(f"  {arch:<16} {fast['route']:>8}: {slow['median_s'] / batch:.3f} → "
                  f"{fast['median_s'] / batch:.3f} s/img = {slow['median_s'] / fast['median_s']:.1f}× faster")

    print("\ngoals: Expected Grad-CAM per image / Grad-CAM per image, measured above")
    verdicts = []
    for arch, (_, measured) in results.items():
        ratio = measured[("egc", True)]["median_s"] / measured[("gradcam", True)]["median_s"]
        route = measured[("egc", True)]["route"]
        extrapolated = " (extrapolated)" if measured[("egc", True)].get("extrapolated") else ""
        if arch in TARGETS:
            limit, path = TARGETS[arch]
            verdict = "PASS" if ratio <= limit else "MISS"
            print(f"  {arch:<16} ≤ {limit:g}× ({path}): {ratio:.2f}×{extrapolated} on the {route} route "
                  f"→ {verdict}")
            verdicts.append(f"{arch} {ratio:.2f}× {verdict}")
        else:
            print(f"  {arch:<16} no target: {ratio:.2f}×{extrapolated} on the {route} route")
            verdicts.append(f"{arch} {ratio:.2f}×")

    builds = []
    ks = [int(k) for k in args.features_k.split(",") if k]
    if ks:
        print(f"\n2. one-off cost per K: h(x') of {args.feature_images} images (extrapolated to R = 2K fit + K "
              f"held-out), and M̂ at M = R = 2K (median of {args.repeats})")
        header = (f"{'K':>5}  {'model':<16}{'S':>4}{'s/img h(x′)':>13}{'R=2K s':>9}{'R=3K s':>9}  "
                  f"{'perturb s':>10}{'M̂+eig+chol s':>14}{'projection s':>13}{'total M̂ s':>11}  "
                  f"{'rank':>9}{'κ':>9}")
        print(header)
        for k in ks:
            name = FEATURE_MODELS.get(k) or next((a for a, s in ARCHITECTURES.items() if s.channels == k), None)
            feat_s = None
            if name is None:
                print(f"{k:>5}  (no registry model with K = {k}: features skipped)")
            else:
                loaded = load_model(name, "none", device=device)
                size = loaded.preprocessing.crop
                images = torch.randn(args.feature_images, 3, size, size, generator=torch.Generator().manual_seed(1))
                reference_features(loaded.model, loaded.layer, images[:2], layout=loaded.layout)  # warm-up
                seconds = clock(lambda: reference_features(loaded.model, loaded.layer, images, layout=loaded.layout),
                                device)
                feat_s = seconds / args.feature_images
                del loaded
                gc.collect()
            features = torch.rand(2 * k, k, generator=torch.Generator().manual_seed(0))
            perturb, moment, projection = [], [], []
            for _ in range(max(1, args.repeats)):
                start = time.perf_counter()
                pset = data_aware_perturbations(features, 2 * k, seed=0)
                t1 = time.perf_counter()
                second = SecondMoment.of(pset, 1e-6)
                t2 = time.perf_counter()
                second.projection  # noqa: B018 - the cached property is the work being timed
                t3 = time.perf_counter()
                perturb.append(t1 - start)
                moment.append(t2 - t1)
                projection.append(t3 - t2)
            p, mo, pr = (statistics.median(v) for v in (perturb, moment, projection))
            d = second.diagnostics
            print(f"{k:>5}  {name or '-':<16}{fmt(size if name else None, 'd'):>4}{fmt(feat_s, '.4f'):>13}"
                  f"{fmt(None if feat_s is None else feat_s * 2 * k, '.1f'):>9}"
                  f"{fmt(None if feat_s is None else feat_s * 3 * k, '.1f'):>9}  {p:>10.3f}{mo:>14.3f}{pr:>13.3f}"
                  f"{p + mo + pr:>11.3f}  {f'{d.rank}/{d.channels}':>9}{d.condition_number:>9.3g}")
            builds.append(f"K={k}: M̂ {p + mo + pr:.2f} s"
                          + ("" if feat_s is None else f", h(x′) for 3K {feat_s * 3 * k:.0f} s"))

    print(f"\nload average at end {os.getloadavg()[0]:.2f}; wall time {time.perf_counter() - began:.0f} s")
    print(f"SUMMARY [{args.device}, B={args.images}]: EGC/Grad-CAM per image: {'; '.join(verdicts)}"
          + (f" | one-off: {'; '.join(builds)}" if builds else ""))


if __name__ == "__main__":
    main()
