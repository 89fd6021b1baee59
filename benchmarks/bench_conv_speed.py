"""Side-by-side CPU conv2d ratios, fastconv vs PyTorch, float32, interleaved in one process.

    python benchmarks/bench_conv_speed.py [--threads 2] [--reps 5] [--only fwd,cl,im2col,train] [--shapes 0,3]

Ratio = torch time / fastconv time (>1: fastconv faster); medians of interleaved, warmed-up runs."""
import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

import fastconv

# (N, C, H, W, K, R, S, pad, stride, groups)
SHAPES = [
    (8, 64, 56, 56, 64, 3, 3, 1, 1, 1),
    (8, 128, 28, 28, 128, 3, 3, 1, 1, 1),
    (8, 256, 14, 14, 256, 3, 3, 1, 1, 1),
    (8, 512, 7, 7, 512, 3, 3, 1, 1, 1),
    (8, 64, 56, 56, 256, 1, 1, 0, 1, 1),
    (8, 256, 56, 56, 64, 1, 1, 0, 1, 1),
    (8, 1024, 14, 14, 2048, 1, 1, 0, 2, 1),
    (8, 3, 224, 224, 64, 7, 7, 3, 2, 1),
    (8, 192, 28, 28, 32, 5, 5, 2, 1, 1),
    (8, 64, 112, 112, 128, 3, 3, 1, 1, 1),
    (8, 256, 28, 28, 256, 3, 3, 1, 1, 256),
]


def name(s):
    N, C, H, W, K, R, S, pad, stride, g = s
    return f"{N},{C},{H},{W}->{K} {R}x{S} p{pad} s{stride}" + (f" g{g}" if g > 1 else "")


def paired(fa, fb, reps):
    fa(), fb()
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter(); fa(); t1 = time.perf_counter(); fb(); t2 = time.perf_counter()
        ta.append(t1 - t0); tb.append(t2 - t1)
    return statistics.median(ta) / statistics.median(tb), statistics.median(tb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="fwd,cl,im2col,train")
    ap.add_argument("--shapes", default="")
    ap.add_argument("--algorithm", default="auto")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    kinds = a.only.split(",")
    idx = [int(i) for i in a.shapes.split(",")] if a.shapes else range(len(SHAPES))
    cols = {k: [] for k in kinds}
    print(f"{'shape':34s} " + " ".join(f"{k:>16s}" for k in kinds))
    for i in idx:
        s = SHAPES[i]
        N, C, H, W, K, R, S, pad, stride, g = s
        x = torch.randn(N, C, H, W)
        w = torch.randn(K, C // g, R, S) * 0.1
        b = torch.randn(K)
        kw = dict(stride=stride, padding=pad, groups=g)
        gflop = 2 * N * K * C // g * R * S * ((H + 2 * pad - R) // stride + 1) * ((W + 2 * pad - S) // stride + 1) / 1e9
        row = []
        for k in kinds:
            if k in ("fwd", "cl"):
                xx = x.contiguous(memory_format=torch.channels_last) if k == "cl" else x
                with torch.no_grad():
                    r, t = paired(lambda: F.conv2d(xx, w, b, **kw),
                                  lambda: fastconv.conv2d(xx, w, b, **kw, algorithm=a.algorithm), a.reps)
            elif k == "im2col":
                def tim():
                    with torch.backends.mkldnn.flags(enabled=False):
                        F.conv2d(x, w, b, **kw)
                with torch.no_grad():
                    r, t = paired(tim, lambda: fastconv.conv2d(x, w, b, **kw, algorithm="im2col"), a.reps)
            elif k == "train":
                xr, wr, br = (t_.clone().requires_grad_() for t_ in (x, w, b))
                dy = torch.randn_like(F.conv2d(x, w, b, **kw))

                def step(fn):
                    return lambda: torch.autograd.grad(fn(xr, wr, br, **kw), (xr, wr, br), dy)
                r, t = paired(step(F.conv2d), step(lambda *args, **kws: fastconv.conv2d(*args, **kws, algorithm=a.algorithm)),
                              max(3, a.reps // 2))
                gflop3 = 3 * gflop
                t = t * gflop / gflop3
            row.append(r)
            cols[k].append(r)
            print(f"  {name(s):34s} {k}: x{r:.2f}  ({gflop / t:.0f} GFLOP/s fastconv)", flush=True)
        print(f"{name(s):34s} " + " ".join(f"{v:16.2f}" for v in row), flush=True)
    print("geomean " + " ".join(f"{k}={math.exp(sum(map(math.log, v)) / len(v)):.2f}" for k, v in cols.items()))


if __name__ == "__main__":
    main()
