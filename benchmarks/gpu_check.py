"""Times fastconv's CUDA conv2d algorithms against torch.nn.functional.conv2d (cuDNN) on the standard shapes of
design.md, after checking each result against cuDNN. Run by benchmarks/gpu_check.sh; alone:
    python benchmarks/gpu_check.py [--budget-s 240] [--dtypes float32,bfloat16]
Prints one table: cuDNN time in ms and, per fastconv algorithm, its time as a multiple of cuDNN's (lower is
better; 1.00 = as fast as cuDNN). float32 runs with TF32 off on both sides (CUDA-core fp32 against fp32)."""
import argparse
import time

import torch
import torch.nn.functional as F

import fastconv

# (name, N, C, H, W, K, R, S, pad, stride, groups)
SHAPES = [
    ("resnet 64@56 3x3", 8, 64, 56, 56, 64, 3, 3, 1, 1, 1),
    ("resnet 128@28 3x3", 8, 128, 28, 28, 128, 3, 3, 1, 1, 1),
    ("resnet 256@14 3x3", 8, 256, 14, 14, 256, 3, 3, 1, 1, 1),
    ("resnet 512@7 3x3", 8, 512, 7, 7, 512, 3, 3, 1, 1, 1),
    ("1x1 64->256 @56", 8, 64, 56, 56, 256, 1, 1, 0, 1, 1),
    ("1x1 256->64 @56", 8, 256, 56, 56, 64, 1, 1, 0, 1, 1),
    ("1x1 s2 1024->2048", 8, 1024, 14, 14, 2048, 1, 1, 0, 2, 1),
    ("stem 7x7 s2", 8, 3, 224, 224, 64, 7, 7, 3, 2, 1),
    ("inception 5x5", 8, 192, 28, 28, 32, 5, 5, 2, 1, 1),
    ("vgg 64@112 3x3", 8, 64, 112, 112, 128, 3, 3, 1, 1, 1),
    ("depthwise 256@28", 8, 256, 28, 28, 256, 3, 3, 1, 1, 256),
]
ALGORITHMS = ["direct", "im2col", "im2col_blas"]


def time_ms(fn, min_total_ms=30.0, max_reps=50):
    for _ in range(3):  # warm-up: allocator, cuDNN autotuning, first-launch costs
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    once = max(start.elapsed_time(end), 1e-3)
    reps = int(min(max_reps, max(3, min_total_ms / once)))
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-s", type=float, default=240.0)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    started = time.time()
    print(f"# {torch.cuda.get_device_name()}  torch {torch.__version__}  cuDNN {torch.backends.cudnn.version()}")
    header = f"{'shape':<20} {'dtype':<9} {'GFLOP':>6} {'cuDNN ms':>9} " + " ".join(f"{a:>12}" for a in ALGORITHMS)
    header += f" {'fwd+bwd auto':>13} {'max err':>8}"
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for name, N, C, H, W, K, R, S, pad, stride, groups in SHAPES:
            if time.time() - started > args.budget_s:
                rows.append(f"{name:<20} {dtype_name:<9} skipped: time budget spent")
                continue
            try:
                x = torch.randn(N, C, H, W, device=dev, dtype=dtype)
                w = torch.randn(K, C // groups, R, S, device=dev, dtype=dtype) / (C // groups * R * S) ** 0.5
                b = torch.randn(K, device=dev, dtype=dtype)
                P = (H + 2 * pad - R) // stride + 1
                Q = (W + 2 * pad - S) // stride + 1
                gflop = 2 * N * K * P * Q * (C // groups) * R * S / 1e9
                expected = F.conv2d(x, w, b, stride, pad, 1, groups)
                t_ref = time_ms(lambda: F.conv2d(x, w, b, stride, pad, 1, groups))
                cells, worst = [], 0.0
                for algorithm in ALGORITHMS:
                    try:
                        got = fastconv.conv2d(x, w, b, stride, pad, 1, groups, algorithm=algorithm)
                        err = ((got.float() - expected.float()).abs().max() / expected.float().abs().max()).item()
                        worst = max(worst, err)
                        t = time_ms(lambda: fastconv.conv2d(x, w, b, stride, pad, 1, groups, algorithm=algorithm))
                        cells.append(f"{t / t_ref:>11.2f}x")
                    except Exception as e:  # keep going; the table says which one failed
                        cells.append(f"{'ERR ' + type(e).__name__[:7]:>12}")
                # training step: forward + all three gradients, auto vs cuDNN
                try:
                    xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
                    dy = torch.randn_like(expected)

                    def step(fn):
                        y = fn(xg, wg, bg, stride, pad, 1, groups)
                        torch.autograd.grad(y, (xg, wg, bg), dy)

                    t_train_ref = time_ms(lambda: step(F.conv2d), max_reps=20)
                    t_train = time_ms(lambda: step(fastconv.conv2d), max_reps=20)
                    cells.append(f"{t_train / t_train_ref:>12.2f}x")
                except Exception as e:
                    cells.append(f"{'ERR ' + type(e).__name__[:8]:>13}")
                rows.append(f"{name:<20} {dtype_name:<9} {gflop:>6.2f} {t_ref:>9.3f} " + " ".join(cells) +
                            f" {worst:>8.1e}")
                del x, w, b, expected
            except Exception as e:
                rows.append(f"{name:<20} {dtype_name:<9} ERROR {type(e).__name__}: {str(e)[:80]}")
            print(rows[-1], flush=True)
    print()
    print("fastconv CUDA time / cuDNN time (lower is better); max err = worst |fastconv - cuDNN| / max|cuDNN|")
    print(header)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
