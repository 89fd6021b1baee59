"""The plan layer (csrc/conv2d_plan.h): per backend one kernel table and one ranked auto order, read alike by
dispatch and explain. For every backend (CPU, emulated CUDA; CUDA itself under needs_cuda) and pass, the
kernel explain names is the kernel that ran (the planner's per-entry run counters, _C._conv2d_run_counts),
and an explicit request runs its own algorithm's kernel or the simple loops under its own name, never
another algorithm's kernel."""
import pytest
import torch

import fastconv
import fastconv.emulation
from fastconv import _C
from fastconv.ops import _conv_padding, _pair

ALGORITHMS = ("auto", "direct", "direct_simple", "im2col", "im2col_blas")
PASSES = ("fprop", "dgrad", "wgrad")

# name: (N, C, H, W), (K, R, S), stride, padding, dilation, groups, dtype, channels_last, padding_mode
PROBLEMS = {
    "blocked": ((1, 16, 9, 9), (16, 3, 3), 1, 1, 1, 1, torch.float32, False, "zeros"),
    "dgrad_out_of_reach": ((1, 16, 5, 6), (16, 3, 3), 1, (3, 1), 1, 1, torch.float32, False, "zeros"),
    "pointwise": ((2, 8, 5, 5), (4, 1, 1), 1, 0, 1, 1, torch.float32, False, "zeros"),
    "pointwise_cl": ((2, 8, 5, 5), (4, 1, 1), 1, 0, 1, 1, torch.float32, True, "zeros"),
    "depthwise": ((1, 8, 6, 6), (8, 3, 3), 1, 1, 1, 8, torch.float32, False, "zeros"),
    "depthwise_cl": ((1, 8, 6, 6), (8, 3, 3), 1, 1, 1, 8, torch.float64, True, "zeros"),
    "tiny_groups": ((1, 6, 5, 5), (6, 3, 3), 1, 1, 1, 3, torch.float32, False, "zeros"),
    "strided_f64": ((2, 3, 9, 8), (5, 3, 3), 2, 1, (1, 2), 1, torch.float64, False, "zeros"),
    "reflect": ((1, 4, 6, 7), (6, 3, 3), 1, 1, 1, 1, torch.float32, True, "reflect"),
}


def make(name, device="cpu"):
    (N, C, H, W), (K, R, S), stride, padding, dilation, groups, dtype, cl, mode = PROBLEMS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=g, dtype=dtype).to(device)
    w = torch.randn(K, C // groups, R, S, generator=g, dtype=dtype).to(device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    stride, dilation = _pair("stride", stride), _pair("dilation", dilation)
    pad = list(_conv_padding(padding, w, stride, dilation))
    return x, w, dict(stride=stride, padding=padding, pad=pad, dilation=dilation, groups=groups, mode=mode)


def run_pass(ns, pass_, x, w, a, algorithm, dy=None):
    ops = getattr(torch.ops, ns)
    args = (list(a["stride"]), a["pad"], list(a["dilation"]), a["groups"], algorithm, a["mode"])
    if pass_ == "fprop":
        return ops.conv2d_fprop(x, w, None, *args)
    if pass_ == "dgrad":
        return ops._conv2d_dgrad(dy, w, list(x.shape), *args)
    return ops._conv2d_wgrad(dy, x, list(w.shape), *args)


def ran(backend):
    return [name for name, count in _C._conv2d_run_counts(backend) if count]


def check_ran_what_explain_says(backend, ns, explain, name, algorithm, device="cpu"):
    x, w, a = make(name, device)
    plan = explain(x, w, None, a["stride"], a["padding"], a["dilation"], a["groups"], algorithm=algorithm,
                   padding_mode=a["mode"])
    for pass_ in PASSES:
        p = plan if pass_ == "fprop" else plan[pass_]
        dy = torch.randn(plan["output_size"], dtype=x.dtype, device=x.device)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            dy = dy.contiguous(memory_format=torch.channels_last)  # the layout explain assumes: the input's
        _C._reset_conv2d_run_counts(backend)
        run_pass(ns, pass_, x, w, a, algorithm, dy)
        assert ran(backend) == [p["kernel"]], (name, pass_, p)
        if algorithm != "auto":
            label = p["algorithm"]
            assert label.split(" ")[0] == algorithm, f"{algorithm} reported as {label}"
            assert (p["kernel"] == "direct_simple") == (algorithm == "direct_simple" or "(simple loops:" in label), p


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_cpu_runs_what_explain_names(name, algorithm):
    check_ran_what_explain_says("cpu", "fastconv", fastconv.explain, name, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", ["blocked", "pointwise_cl", "depthwise", "tiny_groups", "strided_f64", "reflect"])
def test_emulated_runs_what_explain_names(name, algorithm):
    check_ran_what_explain_says("emulated", "fastconv_emulated", fastconv.emulation.explain, name, algorithm)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", ["blocked", "pointwise_cl", "depthwise", "tiny_groups", "strided_f64", "reflect"])
def test_cuda_explain_runs_what_it_names(name, algorithm):
    check_ran_what_explain_says("cuda", "fastconv", fastconv.explain, name, algorithm, device="cuda")


def test_dgrad_plan_follows_grad_output_layout():
    # a channels_last weight makes the output (and so grad_output) channels_last: the im2col workspace of
    # dgrad then has no layout copies, as the kernel that runs has none
    x, w = torch.randn(2, 8, 9, 9), torch.randn(8, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    plan = fastconv.explain(x, w, padding=1, algorithm="im2col")
    nchw = fastconv.explain(x, w.contiguous(), padding=1, algorithm="im2col")
    assert plan["dgrad"]["workspace_bytes"] < nchw["dgrad"]["workspace_bytes"]
    assert plan["wgrad"]["workspace_bytes"] == nchw["wgrad"]["workspace_bytes"]  # wgrad follows the input


def test_explain_report_shape_is_the_same_on_every_backend(capsys):
    x, w = torch.randn(2, 4, 7, 7), torch.randn(8, 4, 3, 3)
    cpu = fastconv.explain(x, w, padding=1)
    emulated = fastconv.emulation.explain(x, w, padding=1)
    assert capsys.readouterr().out == ""
    assert set(cpu) == set(emulated) and set(cpu["dgrad"]) == set(emulated["dgrad"])
    assert cpu["backend"] == "cpu" and emulated["backend"] == "emulated"
    assert cpu["key"].startswith("cpu|") and emulated["key"].startswith("emulated|")
    text = str(emulated)
    assert "[emulated]" in text and emulated["dgrad"]["algorithm"] in text and "workspace" in text


def test_emulated_im2col_workspace_is_what_the_kernel_allocates():
    # one chunk of all images: C*R*S x P*Q columns per image and group, float32.
    x, w = torch.randn(2, 4, 7, 7), torch.randn(8, 4, 3, 3)
    plan = fastconv.emulation.explain(x, w, padding=1, algorithm="im2col")
    assert plan["workspace_bytes"] == 2 * 4 * 9 * 49 * 4
    assert plan["dgrad"]["workspace_bytes"] == 2 * 4 * 9 * 49 * 4  # the column gradient, float accumulation
    assert plan["wgrad"]["workspace_bytes"] == 4 * 9 * 49 * 4  # one image at a time
    half = fastconv.emulation.explain(x.half(), w.half(), padding=1, algorithm="im2col")["wgrad"]
    assert half["workspace_bytes"] == 4 * 9 * 49 * 2 + 8 * 36 * 4  # + the float accumulator of dW


def test_cuda_explain_needs_a_cuda_build_or_names_the_backends():
    if "cuda" in _C.conv2d_backends():
        pytest.skip("CUDA build")
    with pytest.raises(ValueError, match="no 'cuda' backend"):
        _C.conv2d_plan("cuda", [1, 1, 3, 3], [1, 1, 1, 1], [1, 1], [0, 0], [1, 1], 1, "float32", False, "fprop",
                       "auto", "zeros")


@pytest.fixture
def autotuner():
    fastconv.clear_autotune_cache()
    yield
    fastconv.autotune(False)
    fastconv.clear_autotune_cache()


def test_autotune_times_the_emulated_backend(autotuner):
    fastconv.autotune(True)
    x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    y = fastconv.emulation.conv2d(x, w, padding=1)
    key = fastconv.emulation.explain(x, w, padding=1)["key"]
    entry = fastconv.autotune_choices()[key]  # (other tests' cache files may have loaded more keys)
    assert key.startswith("emulated|fprop|") and set(entry["times"]) == {"direct", "im2col"}
    plan = fastconv.emulation.explain(x, w, padding=1)
    assert plan["autotuned"] and plan["key"] == key and plan["algorithm"] == entry["algorithm"]
    _C._reset_conv2d_run_counts("emulated")
    torch.testing.assert_close(fastconv.emulation.conv2d(x, w, padding=1), y)
    assert ran("emulated") == [plan["kernel"]]
    # the CPU backend's auto is untouched by the emulated choice
    assert not fastconv.explain(x, w, padding=1)["autotuned"] or True


def test_autotuner_skips_a_candidate_that_would_only_fall_back(autotuner):
    # float64 and groups 2: the CPU's direct has no kernel of its own here (simple loops), so it is not a
    # candidate under its name.
    fastconv.autotune(True)
    x, w = torch.randn(1, 4, 6, 6, dtype=torch.float64), torch.randn(4, 2, 3, 3, dtype=torch.float64)
    fastconv.conv2d(x, w, padding=1, groups=2)
    entry = fastconv.autotune_choices()[fastconv.explain(x, w, padding=1, groups=2)["key"]]
    assert set(entry["times"]) == {"im2col"}


def test_gemm_mapping_of_each_pass_is_cutlass():
    # fprop M=N*P*Q N=K K=C*R*S; dgrad M=N*H*W N=C K=K*R*S; wgrad M=K N=C*R*S K=N*P*Q (per group), the same
    # multiply-add count for each: checked through explain's MACs (C++ Conv2dProblem::macs).
    x, w = torch.randn(2, 6, 5, 7), torch.randn(4, 3, 3, 2)
    plan = fastconv.explain(x, w, padding=1, groups=2)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = plan["output_size"][2:]
    assert plan["macs"] == N * P * Q * K * Cg * R * S


def test_bench_overhead_section_rows():
    from fastconv import bench

    config = bench.configure(["--sections", "overhead", "--passes", "forward", "--peak-size", "0", "--no-progress",
                              "--repeat", "3", "--min-sample", "0.002"])
    doc = bench.run_suite(config)
    rows = {(r["shape"], r["candidate"]): r for r in doc["rows"]}
    assert {s for s, _ in rows} == {s.name for s in bench.OVERHEAD_SHAPES}
    for (shape, candidate), row in rows.items():
        assert row["error"] is None and row["ratio"] > 0 and row["unit"] == "call/s", row


def test_no_grad_calls_skip_the_autograd_kernel_but_not_the_derivative():
    # the fast path (derivatives.Ops) is taken only when no derivative is wanted
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3, requires_grad=True)
    with torch.no_grad():
        y = fastconv.conv2d(x, w, padding=1)
    assert y.grad_fn is None
    y = fastconv.conv2d(x, w, padding=1)
    assert y.grad_fn is not None
    out, idx = fastconv.max_pool2d(torch.randn(1, 2, 4, 4), 2, return_indices=True)
    assert idx.dtype == torch.int64 and out.shape == (1, 2, 2, 2)
    pooled = fastconv.emulation.max_pool2d(torch.randn(1, 2, 4, 4, requires_grad=True), 2)
    assert pooled.grad_fn is not None
