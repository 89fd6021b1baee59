"""Fast unit tests of the benchmark harness (fastconv/bench.py, fastconv/shapes.py): the work counts,
the interleaving, warm-up, validation and median logic with fake candidates, the output formats, and an
end-to-end --quick run on tiny shapes."""
import json
import statistics
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from fastconv import bench, testing
from fastconv.shapes import CONV_SHAPES, GEMM_SHAPES, POOL_SHAPES, ConvShape, GemmShape, PoolShape

TINY_CONV = [ConvShape("tiny.3x3", "test", 2, 4, 6, 6, 4, 3, 3, pad=1),
             ConvShape("tiny.dw", "test", 2, 4, 6, 6, 4, 3, 3, pad=1, groups=4)]
TINY_POOL = [PoolShape("tiny.pool", "test", 2, 3, 7, 7, 3, 2, pad=1)]
TINY_GEMM = [GemmShape("tiny.gemm", "test", 8, 8, 8)]


# ----------------------------------------------------------------------------------------------------
# Work counts
# ----------------------------------------------------------------------------------------------------
def test_conv_flops_by_hand():
    s = ConvShape("t", "t", N=2, C=3, H=5, W=5, K=4, R=3, S=3, pad=1, stride=2)
    assert (s.P, s.Q) == (3, 3)
    # 2 N K P Q C R S = 2·2·4·3·3·3·3·3
    assert s.flops == 3888
    # resnet.conv2_3x3: 2 · 8 · 64 · 56 · 56 · 64 · 3 · 3
    assert CONV_SHAPES[0].flops == 1_849_688_064
    # depthwise: each output sees C/g = 1 channel
    dw = ConvShape("dw", "t", N=1, C=8, H=4, W=4, K=8, R=3, S=3, pad=1, groups=8)
    assert dw.flops == 2 * 1 * 8 * 4 * 4 * 1 * 9


def test_pool_bytes_by_hand():
    s = PoolShape("t", "t", N=1, C=1, H=4, W=4, kernel=2, stride=2)
    assert (s.P, s.Q) == (2, 2)
    # forward: 16 floats read, 4 floats + 4 int64 indices written
    assert s.bytes("forward") == 16 * 4 + 4 * 4 + 4 * 8
    # backward: 4 floats + 4 indices read, 16 floats written
    assert s.bytes("backward") == 4 * 4 + 4 * 8 + 16 * 4
    assert s.bytes("forward", element_size=8) == 16 * 8 + 4 * 8 + 4 * 8
    with pytest.raises(ValueError):
        s.bytes("sideways")


def test_gemm_flops():
    assert GemmShape("g", "g", 2, 3, 4).flops == 2 * 2 * 3 * 4
    im2col = CONV_SHAPES[0].gemm()
    assert (im2col.M, im2col.N, im2col.K) == (64, 56 * 56, 64 * 9)


# The standard shapes and the check matrix's cases (pairs, "same"/"valid", dilation): one type each.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's note on its own copy
@pytest.mark.parametrize("shape", CONV_SHAPES + testing.CONV_SHAPES, ids=str)
def test_conv_output_size_matches_torch(shape):
    x = torch.empty(shape.N, shape.C, shape.H, shape.W, device="meta")
    w = torch.empty(shape.K, shape.C // shape.groups, shape.R, shape.S, device="meta")
    y = F.conv2d(x, w, None, *shape.args())
    assert tuple(y.shape) == (shape.N, shape.K, shape.P, shape.Q)


@pytest.mark.parametrize("shape", POOL_SHAPES + testing.POOL_SHAPES, ids=str)
def test_pool_output_size_matches_torch(shape):
    x = torch.empty(1, 1, shape.H, shape.W)
    y = F.max_pool2d(x, *shape.args())
    assert tuple(y.shape[2:]) == (shape.P, shape.Q)


def test_one_shape_type_each():
    assert all(type(s) is ConvShape for s in CONV_SHAPES + testing.CONV_SHAPES)
    assert all(type(s) is PoolShape for s in POOL_SHAPES + testing.POOL_SHAPES)
    same = testing.CONV_SHAPES[[s.name for s in testing.CONV_SHAPES].index("same")]
    assert same.pads() == (1, 2, 1, 1) and str(same) == "same 1x3x6x5->2 4x2 p=same s1 d1,2"
    assert str(POOL_SHAPES[0]) == "resnet.maxpool_k3s2 32x64x112x112 k3 s2 p1"


def test_standard_suite_is_complete():
    assert len(CONV_SHAPES) == 11 and len(POOL_SHAPES) == 3
    assert len({s.name for s in CONV_SHAPES + POOL_SHAPES + GEMM_SHAPES}) == len(CONV_SHAPES + POOL_SHAPES
                                                                                  + GEMM_SHAPES)
    assert any(s.groups == s.C for s in CONV_SHAPES)
    assert any(s.ceil_mode for s in POOL_SHAPES)
    assert {"square.512", "square.1024", "square.2048"} <= {s.name for s in GEMM_SHAPES}
    from benchmarks import shapes as reexport
    assert reexport.CONV_SHAPES is CONV_SHAPES


# ----------------------------------------------------------------------------------------------------
# measure(): interleaving, warm-up, median, failures, validation
# ----------------------------------------------------------------------------------------------------
class FakeTimer:
    """Calls fn, and returns the next scripted time of the candidate that fn logged."""

    cuda = False

    def __init__(self, log, times):
        self.log, self.times = log, {k: list(v) for k, v in times.items()}

    def __call__(self, fn, number=1):
        for _ in range(number):
            fn()
        name = self.log[-1]
        return self.times[name].pop(0) if self.times.get(name) else 1.0

    def sync(self):
        pass


def fake(log, name, out=None, fail_at=None):
    calls = [0]

    def make():
        def fn():
            calls[0] += 1
            log.append(name)
            if fail_at is not None and calls[0] >= fail_at:
                raise RuntimeError(f"{name} broke\nsecond line")
            return out
        return fn
    return make


def test_measure_interleaves_round_robin_with_rotation():
    log = []
    cands = {n: fake(log, n) for n in "abc"}
    bench.measure(cands, repeat=3, warmup=1, timer=FakeTimer(log, {}))
    assert log[:3] == ["a", "b", "c"]  # warm-up, once each
    assert log[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_measure_median_of_repeats_excludes_warmup():
    log = []
    times = {"a": [100.0, 3.0, 1.0, 2.0, 50.0, 4.0], "b": [100.0, 7.0, 5.0, 6.0, 9.0, 8.0]}
    m = bench.measure({n: fake(log, n) for n in "ab"}, repeat=5, warmup=1, timer=FakeTimer(log, times))
    assert m["a"].samples == [3.0, 1.0, 2.0, 50.0, 4.0]
    assert m["a"].median == 3.0 and m["b"].median == statistics.median([7.0, 5.0, 6.0, 9.0, 8.0])


def test_measure_keeps_going_when_a_candidate_raises():
    log = []

    def broken_make():
        raise NotImplementedError("no CPU kernel for fastconv::mm")

    cands = {"a": fake(log, "a"), "setup": broken_make, "late": fake(log, "late", fail_at=3)}
    m = bench.measure(cands, repeat=4, warmup=1, timer=FakeTimer(log, {}))
    assert m["a"].median == 1.0 and len(m["a"].samples) == 4
    assert m["setup"].median is None and m["setup"].error.startswith("NotImplementedError: no CPU kernel")
    assert m["late"].median is None and m["late"].error == "RuntimeError: late broke"
    assert log.count("late") == 3  # warm-up, one sample, then the failing call; never again


def test_measure_marks_wrong_results():
    log = []
    ref = torch.ones(3, 3)
    cands = {"torch": fake(log, "torch", ref), "ok": fake(log, "ok", ref + 1e-6),
             "bad": fake(log, "bad", ref * 2), "nan": fake(log, "nan", ref * float("nan")),
             "shape": fake(log, "shape", torch.ones(2))}
    m = bench.measure(cands, repeat=2, timer=FakeTimer(log, {}), reference="torch", tolerance=1e-3)
    assert m["ok"].error is None and m["ok"].median == 1.0
    for name in ("bad", "nan", "shape"):
        assert m[name].error.startswith("wrong") and m[name].median is None
    assert "bad" not in log[5:]


def test_measure_batches_short_calls():
    log = []
    timer = FakeTimer(log, {"a": [1e-5, 1e-5, 1e-5]})
    m = bench.measure({"a": fake(log, "a")}, repeat=2, timer=timer, min_sample_s=1e-3)
    assert m["a"].number == 100
    assert log.count("a") == 1 + 2 * 100


def test_measure_budget_limits_slow_candidates():
    log = []
    times = {"fast": [1.0] * 6, "slow": [4.0] * 6, "slower": [12.0] * 6}
    m = bench.measure({n: fake(log, n) for n in times}, repeat=5, timer=FakeTimer(log, times), budget_s=10.0)
    assert len(m["fast"].samples) == 5 and m["fast"].note is None
    assert len(m["slow"].samples) == 2 and "2 of 5" in m["slow"].note
    assert m["slower"].samples == [12.0] and "warm-up" in m["slower"].note
    assert log.count("slower") == 1 and log.count("slow") == 3


def test_real_timer_measures_sleep():
    t = bench.Timer("cpu")(lambda: time.sleep(0.01), number=2)
    assert 0.009 < t < 0.1


# ----------------------------------------------------------------------------------------------------
# Rows, summary, output formats
# ----------------------------------------------------------------------------------------------------
def test_rows_ratios_and_peak_fraction():
    ms = {"torch": bench.Measurement([2.0, 2.0, 2.0]), "fast": bench.Measurement([1.0]),
          "slow": bench.Measurement([4.0]), "na": bench.Measurement(error="RuntimeError: x")}
    rows = bench.rows_from(ms, section="conv", shape="s", desc="d", layout="nchw", pass_="forward", work=8e9,
                           unit="GFLOP/s", peak=16.0)
    by = {r.candidate: r for r in rows}
    assert by["torch"].ratio == 1.0 and by["fast"].ratio == 2.0 and by["slow"].ratio == 0.5
    assert by["fast"].throughput == 8.0 and by["fast"].peak_fraction == 0.5
    assert by["na"].ratio is None and by["na"].throughput is None
    summary = bench.summarize(rows + bench.rows_from(
        {"torch": bench.Measurement([1.0]), "fast": bench.Measurement([0.125]), "slow": bench.Measurement([2.0]),
         "na": bench.Measurement([1.0])},
        section="conv", shape="t", desc="d", layout="nchw", pass_="forward", work=1, unit="GFLOP/s"))
    by = {s["candidate"]: s for s in summary}
    assert by["fast"]["geomean_ratio"] == pytest.approx(4.0)  # sqrt(2 · 8)
    assert by["slow"]["geomean_ratio"] == pytest.approx(0.5)
    assert (by["na"]["count"], by["na"]["total"]) == (1, 2)
    assert "torch" not in by


def sample_doc():
    ms = {"torch": bench.Measurement([2e-3]), "direct": bench.Measurement([4e-3]),
          "im2col": bench.Measurement(error="NotImplementedError: no kernel"),
          "auto": bench.Measurement(error="wrong: max error 1 (scale 1)")}
    rows = bench.rows_from(ms, section="conv", shape="tiny.3x3", desc=TINY_CONV[0].describe(), layout="nchw",
                           pass_="forward", work=2e9, unit="GFLOP/s", peak=2000.0)
    return {"schema": bench.SCHEMA, "peak": {"gemm_size": 64, "gflops": 2000.0, "gbps": 10.0},
            "meta": {"date": "2026-01-01T00:00:00+00:00", "commit": "abc", "device": "x86_64", "device_type": "cpu",
                     "threads": 2, "dtype": "float32", "torch": torch.__version__, "build_info": {}},
            "rows": [r.as_dict() for r in rows], "summary": bench.summarize(rows)}


def test_format_table():
    doc = sample_doc()
    text = bench.format_table(doc)
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["section", "shape", "layout", "pass", "candidate"]
    assert "1000 GFLOP/s" in text and "500.0 GFLOP/s" in text and "0.50x" in text and "50%" in text and "25%" in text
    assert "NotImplementedError: no kernel" in text
    direct = next(line for line in lines if " direct " in line)
    assert "4.000" in direct  # median ms
    assert lines[2].startswith("conv") and lines[3].startswith(" ")  # the group label once
    ratio_col = lines[0].index("ratio") + len("ratio")
    assert all(line[ratio_col - 5:ratio_col] in ("1.00x", "0.50x", "  n/a", "wrong") for line in lines[2:])
    ratios = bench.format_table(doc, ratios_only=True)
    assert "GFLOP/s" not in ratios and "4.000" not in ratios and "0.50x" in ratios


def test_format_markdown_and_summary():
    doc = sample_doc()
    md = bench.format_markdown(doc)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0] == "| shape | layout | pass | torch | direct | im2col | auto |"
    assert table[1].count("|") == table[0].count("|")
    assert "| 1.00x (50%) | 0.50x (25%) | n/a | wrong |" in table[2]
    assert "ms" not in md and "GFLOP/s" not in md and "†" not in md
    doc["rows"][1]["note"] = "over --budget: 1 of 3 samples"
    md = bench.format_markdown(doc)
    assert "| 0.50x (25%) † |" in md and "† fewer samples" in md
    summary = bench.format_summary(doc)
    assert "direct" in summary and "0.50x" in summary and "1/1" in summary and "0/1" in summary
    header = bench.format_header(doc)
    assert "2000.0 GFLOP/s" in header or "2000 GFLOP/s" in header and "commit abc" in header


# ----------------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------------
TINY_ARGS = ["--repeat", "1", "--peak-size", "64", "--threads", "2", "--no-progress"]


def run_tiny(argv, capsys):
    status = bench.main(argv + TINY_ARGS, conv_shapes=TINY_CONV, pool_shapes=TINY_POOL, gemm_shapes=TINY_GEMM)
    return status, capsys.readouterr().out


def test_quick_end_to_end_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    t0 = time.perf_counter()
    status, out = run_tiny(["--quick", "--json", str(path)], capsys)
    assert time.perf_counter() - t0 < 20
    assert status == 0
    doc = json.loads(path.read_text())
    assert doc["schema"] == bench.SCHEMA
    assert set(doc) == {"schema", "meta", "peak", "rows", "summary"}
    assert {"date", "commit", "command", "device", "threads", "dtype", "torch", "build_info"} <= set(doc["meta"])
    assert doc["meta"]["threads"] == 2 and doc["peak"]["gflops"] > 0 and doc["peak"]["gbps"] > 0
    row_keys = {"section", "shape", "desc", "layout", "pass", "candidate", "median_s", "samples_s", "work", "unit",
                "throughput", "ratio", "peak_fraction", "error", "calls_per_sample", "note"}
    for row in doc["rows"]:
        assert set(row) == row_keys
        assert (row["median_s"] is None) == (row["error"] is not None)
    sections = {(r["section"], r["pass"]) for r in doc["rows"]}
    assert sections == {("conv", "forward"), ("conv", "train_step"), ("pool", "forward"), ("pool", "backward"),
                        ("gemm", "forward")}
    conv = [r for r in doc["rows"] if r["section"] == "conv"]
    assert {r["candidate"] for r in conv} == set(bench.CONV_CANDIDATES)
    baseline = [r for r in doc["rows"] if r["candidate"] == "torch"]
    assert all(r["ratio"] == 1.0 for r in baseline)
    torch_fwd = next(r for r in conv if r["candidate"] == "torch" and r["pass"] == "forward")
    assert torch_fwd["work"] == TINY_CONV[0].flops
    assert {r["layout"] for r in doc["rows"] if r["section"] == "pool"} == {"nchw", "channels_last"}
    # PyTorch's own paths always run on the CPU; fastconv's direct kernel exists on every build
    assert all(r["median_s"] is not None for r in conv if r["candidate"] in ("torch", "torch_im2col", "direct"))
    assert "geomean" in out and "tiny.3x3" in out


def test_filters_layouts_and_markdown(capsys):
    status, out = run_tiny(["--shapes", "tiny.dw", "--passes", "grad_input,grad_weight", "--sections", "conv",
                            "--algorithms", "direct", "--channels-last", "--format", "markdown", "--ratios-only"],
                           capsys)
    assert status == 0
    table = [line for line in out.splitlines() if line.startswith("| `")]
    assert len(table) == 2 and all("tiny.dw" in line and "channels_last" in line for line in table)
    assert "| shape | layout | pass | torch | direct |" in out


def test_baseline_torch_im2col(tmp_path, capsys):
    # fastconv's im2col against PyTorch's own im2col path (oneDNN off): ratios and geometric means are taken
    # against torch_im2col for convolutions, against torch for pooling; outputs still checked against torch.
    path = tmp_path / "im2col.json"
    status, out = run_tiny(["--sections", "conv,pool", "--passes", "forward", "--shapes", "tiny.3x3,tiny.pool",
                            "--algorithms", "im2col", "--baseline", "torch_im2col", "--format", "markdown",
                            "--json", str(path)], capsys)
    assert status == 0
    doc = json.loads(path.read_text())
    assert doc["meta"]["baseline"] == "torch_im2col"
    conv = {r["candidate"]: r for r in doc["rows"] if r["section"] == "conv"}
    assert set(conv) == {"torch", "torch_im2col", "im2col"}  # the baseline joins though --algorithms left it out
    assert all(r["median_s"] is not None for r in conv.values())
    base_s = conv["torch_im2col"]["median_s"]
    assert conv["torch_im2col"]["ratio"] == 1.0
    assert conv["im2col"]["ratio"] == pytest.approx(base_s / conv["im2col"]["median_s"])
    assert conv["torch"]["ratio"] == pytest.approx(base_s / conv["torch"]["median_s"])
    pool = [r for r in doc["rows"] if r["section"] == "pool"]
    assert pool and all(r["ratio"] == 1.0 for r in pool if r["candidate"] == "torch")
    summary = {(s["section"], s["candidate"]): s for s in doc["summary"] if s["layout"] == "nchw"}
    assert set(summary) == {("conv", "torch"), ("conv", "im2col"), ("pool", "fastconv"),
                            ("pool", "fastconv_indices")}
    assert summary[("conv", "im2col")]["geomean_ratio"] == pytest.approx(conv["im2col"]["ratio"])
    assert "**conv** (ratio to `torch_im2col`" in out and "**pool** (ratio to `torch`" in out
    assert "'torch_im2col' for convolutions" in out
    assert "| shape | layout | pass | torch | torch_im2col | im2col |" in out


def test_default_baseline_is_torch(capsys):
    config = bench.configure(["--algorithms", "im2col"])
    assert config.baseline == "torch" and config.algorithms == ["im2col"]
    assert bench.configure(["--algorithms", "im2col", "--baseline", "torch_im2col"]).algorithms == [
        "torch_im2col", "im2col"]
    with pytest.raises(SystemExit):
        bench.configure(["--baseline", "fastconv"])
    capsys.readouterr()


def test_plot(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    path = tmp_path / "ratios.png"
    status, out = run_tiny(["--sections", "gemm", "--plot", str(path)], capsys)
    assert status == 0 and path.stat().st_size > 1000
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert bench.main(["--plot", str(path)]) == 2
    assert "matplotlib" in capsys.readouterr().err


def test_info_main(capsys):
    assert bench.info_main([], conv_shapes=TINY_CONV[:1]) == 0
    out = capsys.readouterr().out
    assert "gemm_kernel" in out and "tiny.3x3" in out and "direct" in out
    assert "x" in out.split("tiny.3x3")[1]


def test_algorithms_come_from_the_one_list():
    import fastconv

    assert bench.FASTCONV_ALGORITHMS == tuple(a for a in fastconv.ALGORITHMS if a != "direct_simple")
    assert bench.configure(["--algorithms", "direct_simple"]).algorithms == ["direct_simple"]
    assert bench.configure(["--algorithms", "direct_simple"]).model_algorithms == ["direct_simple"]


def plot_doc():
    def row(section, shape, pass_, candidate, ratio):
        return {"section": section, "shape": shape, "desc": "", "layout": "nchw", "pass": pass_,
                "candidate": candidate, "ratio": ratio, "median_s": 1.0 if ratio else None}

    rows = [row("conv", "c1", "forward", "torch", 1.0), row("conv", "c1", "forward", "direct", 0.02),
            row("conv", "c1", "forward", "im2col", 6.0), row("conv", "c2", "forward", "torch", 1.0),
            row("conv", "c2", "forward", "direct", None), row("conv", "c2", "forward", "im2col", 1.5),
            row("pool", "p1", "forward", "torch", 1.0), row("pool", "p1", "forward", "fastconv", 3.0),
            row("pool", "p1", "forward", "fastconv_indices", 0.5)]
    meta = {"baseline": "torch", "commit": "abc", "device": "cpu", "threads": 2, "dtype": "float32"}
    return {"meta": meta, "rows": rows}


def test_plot_log_axis_and_candidates_per_section():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    fig = bench.figure(plot_doc())
    try:
        conv, pool = fig.axes[0], fig.axes[1]
        assert conv.get_yscale() == "log" and pool.get_yscale() == "log"
        low, high = conv.get_ylim()
        assert low < 0.02 and high > 6.0  # both ends in view
        # each panel groups only its own section's candidates, the baseline left out
        assert [t.get_text() for t in conv.get_legend().get_texts()] == ["direct", "im2col"]
        assert [t.get_text() for t in pool.get_legend().get_texts()] == ["fastconv", "fastconv_indices"]
        # bars start at 1x: 0.02x reaches down, 6x up; the missing ratio draws no bar
        tops = sorted(round(p.get_y() + p.get_height(), 6) for p in conv.patches)
        assert tops == [0.02, 1.5, 6.0] and all(p.get_y() == 1.0 for p in conv.patches)
    finally:
        plt.close(fig)
