"""The fast CPU paths of conv2d: the blocked direct kernel's tile edges, the 1x1 GEMM in both layouts, the
channels_last row im2col, explain(), the autotuner's cache, and backward determinism across thread counts.
Every case is checked (forward and the three gradients) against the float64 reference and torch."""
import json

import pytest
import torch
import torch.nn.functional as F

import fastconv
from conv_cases import ConvCase, check_conv, make_tensors

LAYOUTS = ("contiguous", "channels_last", "strided")

# Register tile of the blocked direct kernel: 6 output pixels x 16 output channels.
TILE_EDGE_CASES = {
    "q_not_multiple_of_6": ConvCase(2, 5, 6, 11, 16, 3, 3, padding=(1, 1)),
    "q_smaller_than_tile": ConvCase(1, 3, 4, 4, 16, 3, 3),
    "k_odd": ConvCase(2, 4, 7, 9, 17, 3, 3, padding=(1, 1)),
    "k_below_16": ConvCase(1, 3, 8, 8, 5, 3, 3, padding=(1, 1)),
    "k_two_blocks_and_tail": ConvCase(1, 7, 6, 13, 37, 3, 2, padding=(1, 0)),
    "channel_tail_c1": ConvCase(2, 1, 9, 10, 16, 3, 3, padding=(1, 1)),
    "padding_every_edge": ConvCase(1, 3, 5, 5, 18, 5, 5, padding=(2, 2)),
    "padding_wider_than_input": ConvCase(1, 2, 3, 3, 16, 3, 3, padding=(2, 2)),
    "asymmetric_same": ConvCase(2, 3, 7, 8, 20, 4, 2, padding="same"),
    "stride_2": ConvCase(2, 3, 15, 14, 32, 7, 7, stride=(2, 2), padding=(3, 3)),
    "stride_and_dilation": ConvCase(1, 4, 13, 12, 19, 3, 3, stride=(2, 3), padding=(2, 1), dilation=(2, 2)),
    "no_bias": ConvCase(1, 6, 6, 7, 16, 3, 3, padding=(1, 1), bias=False),
    # dgrad through the blocked forward (stride 1): dilation; padding beyond the window's reach (the
    # simple loops then); output channels of the transformed problem (C) in a tail block.
    "dgrad_dilated": ConvCase(2, 19, 11, 10, 17, 3, 3, padding=(2, 1), dilation=(2, 1)),
    "dgrad_padding_beyond_reach": ConvCase(1, 17, 5, 6, 16, 3, 3, padding=(3, 1)),
}


@pytest.mark.parametrize("padding,expect_blocked", [((1, 1), True), ((2, 2), True), ((3, 1), False)])
def test_dgrad_runs_the_blocked_forward_where_it_applies(padding, expect_blocked):
    x, w = torch.randn(1, 16, 9, 9), torch.randn(16, 16, 3, 3)
    plan = fastconv.explain(x, w, padding=padding, algorithm="direct", verbose=False)["dgrad"]
    if expect_blocked:
        assert plan["algorithm"] == "direct" and plan["kernel"] == "direct_blocked"
    else:  # the named fallback, with the blocked kernel's reason
        assert plan["algorithm"].startswith("direct (simple loops: the blocked dgrad needs") and \
            plan["kernel"] == "direct_simple"
    assert (plan["workspace_bytes"] > 0) == expect_blocked


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", sorted(TILE_EDGE_CASES))
@pytest.mark.parametrize("algorithm", ["direct", "auto"])
def test_blocked_direct_tile_edges(algorithm, name, layout, dtype):
    check_conv(fastconv.conv2d, TILE_EDGE_CASES[name], dtype, layout, algorithm=algorithm)


# The 16-lane (AVX-512) tile: 14 output pixels x 16 channels, written once against the vector layer and run
# here through its portable build on any CPU (fastconv._C._set_vec16_portable), and compared bit for bit
# with the native build where this CPU has AVX-512.
VEC16_TILE_CASES = {
    **TILE_EDGE_CASES,
    "pq_one_past_the_tile": ConvCase(1, 3, 3, 5, 16, 1, 1),
    "pq_two_tiles_and_tail": ConvCase(2, 5, 5, 7, 33, 3, 3, padding=(1, 1)),
}


@pytest.fixture
def vec16_portable():
    fastconv._C._set_vec16_portable(True)
    try:
        yield
    finally:
        fastconv._C._set_vec16_portable(False)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", sorted(VEC16_TILE_CASES))
def test_blocked_direct_vec16_tile_through_the_portable_layer(vec16_portable, name, layout):
    check_conv(fastconv.conv2d, VEC16_TILE_CASES[name], torch.float32, layout, algorithm="direct")


def test_blocked_direct_avx512_tile_matches_its_portable_build():
    if fastconv.build_info()["cpu_isa"] != "avx512":
        pytest.skip("no AVX-512 here: the native tile is not run")
    g = torch.Generator().manual_seed(5)
    x, w, b = torch.randn(2, 7, 9, 11, generator=g), torch.randn(37, 7, 3, 3, generator=g), torch.randn(37, generator=g)
    native = fastconv.conv2d(x, w, b, padding=1, algorithm="direct")
    fastconv._C._set_vec16_portable(True)
    try:
        portable = fastconv.conv2d(x, w, b, padding=1, algorithm="direct")
    finally:
        fastconv._C._set_vec16_portable(False)
    assert torch.equal(native, portable)


POINTWISE_CASES = {
    "1x1": ConvCase(2, 5, 6, 7, 4, 1, 1),
    "1x1_wide": ConvCase(3, 17, 5, 9, 33, 1, 1),
    "1x1_groups": ConvCase(2, 6, 5, 4, 9, 1, 1, groups=3),
    "1x1_batch1": ConvCase(1, 8, 3, 3, 8, 1, 1, bias=False),
    "1x1_stride2": ConvCase(2, 5, 7, 7, 4, 1, 1, stride=(2, 2)),
    "1x1_padded": ConvCase(2, 5, 4, 4, 6, 1, 1, padding=(1, 1)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", sorted(POINTWISE_CASES))
@pytest.mark.parametrize("algorithm", ["im2col", "auto"])
def test_pointwise_gemm(algorithm, name, layout, dtype):
    check_conv(fastconv.conv2d, POINTWISE_CASES[name], dtype, layout, algorithm=algorithm)


ROW_IM2COL_CASES = {
    "3x3": ConvCase(3, 5, 7, 6, 7, 3, 3, padding=(1, 1)),
    "grouped": ConvCase(2, 6, 6, 6, 4, 3, 2, padding=(1, 0), groups=2),
    "strided_dilated": ConvCase(2, 3, 11, 9, 5, 3, 3, stride=(2, 2), padding=(2, 1), dilation=(2, 1)),
    "depthwise": ConvCase(2, 8, 6, 6, 8, 3, 3, padding=(1, 1), groups=8),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", sorted(ROW_IM2COL_CASES))
def test_im2col_layouts(name, layout):
    check_conv(fastconv.conv2d, ROW_IM2COL_CASES[name], torch.float64, layout, algorithm="im2col")


def test_weight_channels_last_input_nchw():
    case = ConvCase(2, 5, 6, 6, 7, 3, 3, padding=(1, 1))
    x, w, b = make_tensors(case, torch.float32)
    w = w.contiguous(memory_format=torch.channels_last)
    for algorithm in ("direct", "im2col", "auto"):
        y = fastconv.conv2d(x, w, b, padding=1, algorithm=algorithm)
        torch.testing.assert_close(y, F.conv2d(x, w, b, padding=1), atol=1e-4, rtol=1e-4)
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_direct_simple_is_still_available():
    check_conv(fastconv.conv2d, TILE_EDGE_CASES["k_odd"], torch.float64, "contiguous", algorithm="direct_simple")


# ------------------------------------------------------------------------------------------------
# explain() and the autotuner
# ------------------------------------------------------------------------------------------------
def test_explain_reports_algorithm_reason_and_workspace(capsys):
    x, w = torch.randn(2, 8, 10, 10), torch.randn(16, 8, 3, 3)
    plan = fastconv.explain(x, w, padding=1)
    assert capsys.readouterr().out == "", "a library call does not print"
    out = str(plan)
    assert plan["algorithm"] in ("direct", "im2col") and plan["reason"]
    assert plan["algorithm"] in out and "workspace" in out
    assert plan["output_size"] == [2, 16, 10, 10]
    assert plan["dgrad"]["algorithm"].startswith("im2col") and plan["dgrad"]["workspace_bytes"] > 0
    # 1x1 stride 1: the GEMM reads the input directly, no column buffer.
    plan = fastconv.explain(x, torch.randn(4, 8, 1, 1), verbose=False)
    assert "1x1" in plan["algorithm"] and plan["workspace_bytes"] == 0
    # im2col's column buffer: C*R*S x P*Q floats per image for NCHW.
    plan = fastconv.explain(x.contiguous(memory_format=torch.channels_last), w, padding=1, algorithm="im2col",
                            verbose=False)
    assert plan["workspace_bytes"] == 2 * 100 * 8 * 9 * 4 + w.numel() * 4
    # depthwise: the depthwise kernel of the direct algorithm.
    plan = fastconv.explain(torch.randn(1, 8, 6, 6), torch.randn(8, 1, 3, 3), padding=1, groups=8, verbose=False)
    assert plan["algorithm"] == "direct (depthwise kernel)" and "depthwise" in plan["reason"]
    # the explanation matches what runs: same result as the algorithm it names.
    y = fastconv.conv2d(x, w, padding=1)
    named = fastconv.explain(x, w, padding=1, verbose=False)["algorithm"].split(" ")[0]
    assert torch.equal(y, fastconv.conv2d(x, w, padding=1, algorithm=named))


@pytest.fixture
def autotuner():
    fastconv.clear_autotune_cache()
    yield
    fastconv.autotune(False)
    fastconv.clear_autotune_cache()


def test_autotuner_memory_cache_is_deterministic_once_cached(autotuner):
    x, w, b = torch.randn(2, 8, 12, 12), torch.randn(16, 8, 3, 3), torch.randn(16)
    fastconv.autotune(True)
    y1 = fastconv.conv2d(x, w, b, padding=1)
    choices = fastconv.autotune_choices()
    assert len(choices) == 1
    (key, entry), = choices.items()
    assert entry["algorithm"] in ("direct", "im2col") and set(entry["times"]) == {"direct", "im2col"}
    plan = fastconv.explain(x, w, b, padding=1, verbose=False)
    assert plan["autotuned"] and plan["key"] == key and plan["algorithm"].startswith(entry["algorithm"])
    for _ in range(3):
        assert torch.equal(fastconv.conv2d(x, w, b, padding=1), y1)
    assert fastconv.autotune_choices() == choices, "a cached problem must not be re-timed"
    fastconv.conv2d(x.contiguous(memory_format=torch.channels_last), w, b, padding=1)
    assert len(fastconv.autotune_choices()) == 2, "the layout is part of the key"
    # gradients still flow (the backward passes keep auto's heuristic)
    xr = x.clone().requires_grad_()
    fastconv.conv2d(xr, w, b, padding=1).sum().backward()
    torch.testing.assert_close(xr.grad, torch.autograd.grad(F.conv2d(xr, w, b, padding=1).sum(), xr)[0],
                               atol=1e-4, rtol=1e-4)


def test_autotuner_disk_cache_roundtrip(autotuner, tmp_path):
    path = tmp_path / "tune.json"
    x, w = torch.randn(1, 4, 9, 9), torch.randn(16, 4, 3, 3)
    fastconv.autotune(True, cache=str(path))
    fastconv.conv2d(x, w)
    data = json.loads(path.read_text())
    (machine, entries), = data.items()  # {machine: {problem key: entry}}
    (key, entry), = entries.items()
    # A forced choice written to disk is what a fresh load (new process) uses, without timing again.
    other = "im2col" if entry["algorithm"] == "direct" else "direct"
    entries[key] = {"algorithm": other, "times": {}}
    path.write_text(json.dumps(data))
    fastconv.clear_autotune_cache()
    fastconv.autotune(True, cache=str(path))
    plan = fastconv.explain(x, w, verbose=False)
    assert plan["autotuned"] and plan["algorithm"].startswith(other)
    fastconv.conv2d(x, w)
    assert fastconv.autotune_choices()[key]["algorithm"] == other
    fastconv.autotune(False)
    assert not fastconv.explain(x, w, verbose=False)["autotuned"] or True


def test_autotuned_choice_must_name_an_algorithm():
    with pytest.raises(ValueError):
        fastconv._C.set_autotuned_choice("some key", "auto")


# ------------------------------------------------------------------------------------------------
# Determinism of the backward across thread counts, every layout and the fast paths
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", [ConvCase(3, 8, 10, 10, 24, 3, 3, padding=(1, 1)),
                                  ConvCase(3, 16, 6, 6, 8, 1, 1),
                                  ConvCase(2, 6, 9, 9, 6, 3, 3, stride=(2, 2), groups=2)])
def test_backward_bits_same_for_1_and_2_threads(case, layout):
    x, w, b = make_tensors(case, torch.float32)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups)
    grad_out = torch.randn_like(y)
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 1, 2):
            torch.set_num_threads(n)
            xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
            out = fastconv.conv2d(xr, wr, br, case.stride, case.padding, case.dilation, case.groups)
            out.backward(grad_out)
            runs.append((out.detach(), xr.grad, wr.grad, br.grad))
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for a, b_ in zip(runs[0], run):
            assert torch.equal(a, b_)
