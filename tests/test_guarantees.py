"""Guarantees beyond the numbers: bitwise determinism (runs, thread counts, use_deterministic_algorithms),
thread safety, no leaks, and PyTorch's behaviour on awkward inputs (NaN/Inf, storage offsets, overlapping
strides, the meta device)."""
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

import fastconv

CONV = [dict(shape=(2, 6, 9, 8), weight=(4, 3, 3, 3), stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
        dict(shape=(3, 16, 12, 12), weight=(24, 16, 3, 3), stride=1, padding=1, dilation=1, groups=1),
        dict(shape=(2, 8, 10, 10), weight=(8, 1, 3, 3), stride=1, padding="same", dilation=1, groups=8),
        # depthwise kernel: channel tail (37 = 32 + 5), two wgrad channel groups, batch chunks, stride 2
        dict(shape=(5, 37, 9, 11), weight=(37, 1, 3, 3), stride=(2, 1), padding=1, dilation=1, groups=37)]


def conv_inputs(case, seed=0, dtype=torch.float32, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(case["shape"], generator=g, dtype=dtype)
    w = torch.randn(case["weight"], generator=g, dtype=dtype)
    b = torch.randn(case["weight"][0], generator=g, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w, b


def conv_fwd_bwd(case, algorithm, seed=0, channels_last=False):
    x, w, b = (t.requires_grad_() for t in conv_inputs(case, seed, channels_last=channels_last))
    y = fastconv.conv2d(x, w, b, case["stride"], case["padding"], case["dilation"], case["groups"],
                        algorithm=algorithm)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1))
    grads = torch.autograd.grad(y, (x, w, b), dy)
    return (y.detach(), *grads)


def pool_fwd_bwd(seed=0, channels_last=False, shape=(4, 24, 13, 12)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).round(decimals=1)  # ties, so the index rule matters
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y, idx = fastconv.max_pool2d(x, 3, 1, 1, return_indices=True)
    (gx,) = torch.autograd.grad(y, x, torch.randn(y.shape, generator=g))
    return y.detach(), idx, gx


def assert_bitwise(a, b, what):
    for i, (s, t) in enumerate(zip(a, b)):
        assert s.shape == t.shape and torch.equal(s, t), f"{what}: result {i} differs bitwise"
        assert s.is_contiguous() == t.is_contiguous()


class threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


# ------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("algorithm", fastconv.ALGORITHMS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_conv_backward_bitwise_deterministic(algorithm, channels_last):
    for i, case in enumerate(CONV):
        with threads(2):
            first = conv_fwd_bwd(case, algorithm, channels_last=channels_last)
            for _ in range(3):
                assert_bitwise(first, conv_fwd_bwd(case, algorithm, channels_last=channels_last),
                               f"case {i}: repeat")
        with threads(1):
            assert_bitwise(first, conv_fwd_bwd(case, algorithm, channels_last=channels_last), f"case {i}: 1 thread")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_max_pool_backward_bitwise_deterministic(channels_last):
    with threads(2):
        first = pool_fwd_bwd(channels_last=channels_last)
        for _ in range(3):
            assert_bitwise(first, pool_fwd_bwd(channels_last=channels_last), "repeat")
    with threads(1):
        assert_bitwise(first, pool_fwd_bwd(channels_last=channels_last), "1 thread")


def test_determinism_check_can_fail():
    """The comparison itself catches a last-bit difference (a reduction in another order)."""
    a = conv_fwd_bwd(CONV[1], "direct")
    b = list(a)
    b[2] = b[2].clone()
    b[2].view(-1)[0] = torch.nextafter(b[2].view(-1)[0], torch.tensor(float("inf")))
    with pytest.raises(AssertionError, match="differs bitwise"):
        assert_bitwise(a, b, "seeded")


def test_use_deterministic_algorithms_never_raises():
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for algorithm in fastconv.ALGORITHMS:
            for case in CONV:
                x, w, b = (t.double().requires_grad_() for t in conv_inputs(case))
                y = fastconv.conv2d(x, w, b, case["stride"], case["padding"], case["dilation"], case["groups"],
                                    algorithm=algorithm)
                gx, gw, gb = torch.autograd.grad(y.square().sum(), (x, w, b), create_graph=True)
                (gx.sum() + gw.sum()).backward()  # double backward too
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
        y = fastconv.max_pool2d(x, 2)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        g.sum().backward()
    finally:
        torch.use_deterministic_algorithms(old)


# ------------------------------------------------------------------------------------------------ threads
def test_concurrent_calls_match_serial():
    jobs = [("conv", i % len(CONV), algorithm, i) for i, algorithm in enumerate(fastconv.ALGORITHMS * 3)]
    jobs += [("pool", 0, None, 100 + i) for i in range(6)]

    def run(job):
        kind, index, algorithm, seed = job
        if kind == "conv":
            return conv_fwd_bwd(CONV[index], algorithm, seed=seed, channels_last=seed % 2 == 1)
        return pool_fwd_bwd(seed=seed, channels_last=seed % 2 == 1, shape=(2 + seed % 3, 16, 11, 9 + seed % 4))

    serial = [run(job) for job in jobs]
    start = threading.Barrier(4)

    def concurrent(job):
        try:
            start.wait(timeout=5)
        except threading.BrokenBarrierError:
            pass
        return run(job)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(2):
            results = list(pool.map(concurrent, jobs * 2))
            start.reset()
            for job, got, want in zip(jobs * 2, results, serial * 2):
                assert_bitwise(want, got, f"{job} under 4 threads")


# ------------------------------------------------------------------------------------------------- leaks
class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _heap_in_use():
    """Bytes malloc has handed out and not taken back (glibc's mallinfo2): unlike RSS it does not hide a
    leak inside pages an earlier test already made resident, nor count pages freed but kept."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


def rss_bytes():
    """Memory in use: malloc's own count where glibc gives it, else the resident set size."""
    in_use = _heap_in_use()
    if in_use is not None:
        return in_use
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def leak_loop(n, conv, pool):
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    for _ in range(n):
        y = pool(conv(x, w, b, 1, 1), 2)
        y.sum().backward()
        x.grad = w.grad = b.grad = None


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_no_leak_over_10000_calls():
    # One iteration makes 6 op calls (conv and pool forward; dgrad, wgrad, bgrad, pool backward):
    # 2,000 iterations are 12,000 calls, each allocating its output. Leaking one 576-byte output per call
    # alone would be ~7 MB; allow 3 MiB of allocator noise.
    conv, pool = fastconv.conv2d, fastconv.max_pool2d
    leak_loop(300, conv, pool)  # warm-up: allocator caches, thread pools, autograd machinery
    before = rss_bytes()
    leak_loop(2_000, conv, pool)
    grown = rss_bytes() - before
    assert grown < 3 * 2 ** 20, f"RSS grew by {grown / 2 ** 20:.1f} MiB over 12,000 calls"


def test_leak_detector_can_fail():
    kept = []

    def leaky_conv(*args):
        y = fastconv.conv2d(*args)
        kept.append(y.detach().clone())
        kept.append(torch.empty(512))  # 2 KiB per call, as a kernel forgetting a workspace would
        return y

    leak_loop(100, leaky_conv, fastconv.max_pool2d)
    before = rss_bytes()
    leak_loop(2_000, leaky_conv, fastconv.max_pool2d)  # 4,000 conv calls, ~9 MiB kept
    assert rss_bytes() - before >= 3 * 2 ** 20
    kept.clear()


# ---------------------------------------------------------------------------------------------- bad input
def nonfinite_pattern(t):
    return torch.stack([torch.isnan(t), torch.isposinf(t), torch.isneginf(t)])


@pytest.mark.parametrize("algorithm", fastconv.ALGORITHMS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_conv_nonfinite_propagates_as_torch(algorithm, value):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, 9, generator=g)
    w = torch.randn(6, 4, 3, 3, generator=g)
    x[0, 1, 4, 4] = value
    x[1, 2, 0, 8] = value
    for args in [(1, 1, 1, 1), (2, 0, 1, 1), (1, 2, 2, 1)]:
        y = fastconv.conv2d(x, w, None, *args, algorithm=algorithm)
        want = F.conv2d(x, w, None, *args)
        assert torch.equal(nonfinite_pattern(y), nonfinite_pattern(want)), args
        finite = torch.isfinite(want)
        torch.testing.assert_close(y[finite], want[finite], rtol=1e-4, atol=1e-4)
        assert (~finite).any()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_conv_nonfinite_weight_as_torch(value):
    x = torch.randn(1, 3, 6, 6)
    w = torch.randn(2, 3, 3, 3)
    w[1, 0, 1, 1] = value
    for algorithm in fastconv.ALGORITHMS:
        y = fastconv.conv2d(x, w, padding=1, algorithm=algorithm)
        assert torch.equal(nonfinite_pattern(y), nonfinite_pattern(F.conv2d(x, w, padding=1))), algorithm


def test_nonfinite_pattern_check_can_fail():
    x = torch.randn(1, 1, 5, 5)
    x[0, 0, 2, 2] = float("nan")
    w = torch.ones(1, 1, 3, 3)
    # A conv that zeroes NaN (nan_to_num on the input) hides it: the pattern comparison catches it.
    y = F.conv2d(x.nan_to_num(), w, padding=1)
    assert not torch.equal(nonfinite_pattern(y), nonfinite_pattern(F.conv2d(x, w, padding=1)))


def test_max_pool_nonfinite_as_torch():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 10, 10, generator=g)
    r = torch.rand(x.shape, generator=g)
    x[r < 0.1] = float("nan")
    x[(r > 0.1) & (r < 0.2)] = float("inf")
    x[(r > 0.2) & (r < 0.3)] = -float("inf")
    for cl in (False, True):
        xi = x.contiguous(memory_format=torch.channels_last) if cl else x
        for args in [(2,), (3, 2, 1), (3, 1, 1, 2)]:
            y, i = fastconv.max_pool2d(xi, *args, return_indices=True)
            yt, it = F.max_pool2d(xi, *args, return_indices=True)
            assert torch.equal(y.nan_to_num(), yt.nan_to_num()) and torch.equal(torch.isnan(y), torch.isnan(yt))
            assert torch.equal(i, it), args


def misaligned(shape, dtype=torch.float32):
    n = 1
    for s in shape:
        n *= s
    t = torch.randn(n + 1, dtype=dtype)[1:].view(shape)
    assert t.storage_offset() == 1
    return t


@pytest.mark.parametrize("algorithm", fastconv.ALGORITHMS)
def test_conv_storage_offset(algorithm):
    x, w, b = misaligned((2, 5, 9, 7)), misaligned((7, 5, 3, 3)), misaligned((7,))
    dy = misaligned((2, 7, 9, 7))
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    y = fastconv.conv2d(xs, ws, bs, padding=1, algorithm=algorithm)
    yr = F.conv2d(xr, wr, br, padding=1)
    y.backward(dy)
    yr.backward(dy)
    torch.testing.assert_close(y, yr, rtol=1e-4, atol=1e-4)
    for a, b_ in ((xs, xr), (ws, wr), (bs, br)):
        torch.testing.assert_close(a.grad, b_.grad, rtol=1e-4, atol=1e-4)
    # ...and the offset views themselves, not clones
    torch.testing.assert_close(fastconv.conv2d(x, w, b, padding=1, algorithm=algorithm),
                               F.conv2d(x, w, b, padding=1), rtol=1e-4, atol=1e-4)


def test_max_pool_storage_offset():
    x = misaligned((2, 5, 9, 7))
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, i = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    yt, it = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(y, yt) and torch.equal(i, it)
    dy = misaligned(tuple(yt.shape))
    fastconv.max_pool2d(xs, 3, 2, 1).backward(dy)
    F.max_pool2d(xr, 3, 2, 1).backward(dy)
    assert torch.equal(xs.grad, xr.grad)


def overlapping(shape):
    """A (N, C, H, W) view whose rows overlap in memory: row h starts one element after row h-1."""
    N, C, H, W = shape
    base = torch.randn(N * C * (H + W))
    return torch.as_strided(base, shape, (C * (H + W), H + W, 1, 1))


@pytest.mark.parametrize("algorithm", fastconv.ALGORITHMS)
def test_conv_overlapping_input(algorithm):
    x = overlapping((2, 3, 8, 8))
    w = torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(fastconv.conv2d(x, w, padding=1, algorithm=algorithm), F.conv2d(x, w, padding=1),
                               rtol=1e-4, atol=1e-4)
    # backward through an overlapping input: its gradient is a fresh tensor, the same as torch's
    xg, xr = x.detach().requires_grad_(), x.detach().requires_grad_()
    fastconv.conv2d(xg, w, padding=1, algorithm=algorithm).sum().backward()
    F.conv2d(xr, w, padding=1).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-4, atol=1e-4)


def test_max_pool_overlapping_input():
    x = overlapping((2, 3, 9, 9))
    for args in [(2,), (3, 2, 1)]:
        y, i = fastconv.max_pool2d(x, *args, return_indices=True)
        yt, it = F.max_pool2d(x, *args, return_indices=True)
        assert torch.equal(y, yt) and torch.equal(i, it)
    xg, xr = x.detach().requires_grad_(), x.detach().requires_grad_()
    fastconv.max_pool2d(xg, 3, 2, 1).sum().backward()
    F.max_pool2d(xr, 3, 2, 1).sum().backward()
    assert torch.equal(xg.grad, xr.grad)


def test_meta_mixed_with_cpu_is_a_clear_error():
    x = torch.randn(1, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3, device="meta")
    with pytest.raises((RuntimeError, ValueError), match=r"(?i)meta|device"):
        fastconv.conv2d(x, w)
    with pytest.raises((RuntimeError, ValueError), match=r"(?i)meta|device"):
        fastconv.conv2d(x.to("meta"), w.to("cpu"))
    with pytest.raises((RuntimeError, ValueError), match=r"(?i)meta|device"):
        fastconv.conv2d(x, w.to("cpu"), torch.zeros(4, device="meta"))


def test_meta_alone_gives_shapes():
    x = torch.empty(2, 3, 9, 8, device="meta")
    w = torch.empty(4, 3, 3, 3, device="meta")
    y = fastconv.conv2d(x, w, stride=2, padding=1)
    assert y.device.type == "meta" and y.shape == F.conv2d(x, w, stride=2, padding=1).shape
    p = fastconv.max_pool2d(x, 3, 2, 1)
    assert p.device.type == "meta" and p.shape == F.max_pool2d(x, 3, 2, 1).shape
