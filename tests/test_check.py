"""The check suite (fastconv.testing, python -m fastconv check): it passes on fastconv's CPU kernels and on
torch.nn.functional itself, and it FAILS on deliberately broken callables, which is what makes a pass mean
something. Also the CLI's exit status and its JSON schema."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv import testing

CONV_SHAPES = {s.name: s for s in testing.CONV_SHAPES}
POOL_SHAPES = {s.name: s for s in testing.POOL_SHAPES}


def conv_subset(*labels):
    return [CONV_SHAPES[label] for label in labels]


# ------------------------------------------------------------------------------------------- passing
def test_torch_conv2d_passes_the_whole_matrix():
    result = testing.check_conv2d(F.conv2d)
    assert result.passed, "\n" + str(result)
    assert len(result.cases) >= 90 and not any(c.skipped for c in result.cases)


def test_torch_max_pool2d_passes_the_whole_matrix():
    result = testing.check_max_pool2d(F.max_pool2d)
    assert result.passed, "\n" + str(result)


@pytest.mark.parametrize("algorithm", fastconv.ALGORITHMS)
def test_fastconv_conv2d_passes(algorithm):
    result = testing.check_conv2d(lambda *a: fastconv.conv2d(*a, algorithm=algorithm), algorithm=algorithm)
    assert result.passed, "\n" + result.summary() + "\n" + "\n".join(f"{c.name}: {c.message}" for c in result.failures)


def test_fastconv_max_pool2d_passes():
    result = testing.check_max_pool2d(fastconv.max_pool2d)
    assert result.passed, "\n" + "\n".join(f"{c.name}: {c.message}" for c in result.failures)


# ------------------------------------------------------------------------------------------- failing
def failing_checks(result):
    return {c.check for c in result.failures}


def test_conv_that_drops_the_bias_fails():
    result = testing.check_conv2d(lambda x, w, b, *a: F.conv2d(x, w, None, *a), quick=True)
    assert not result.passed
    by_shape = {c.name: c for c in result.cases}
    # Every case with a bias fails, on the forward; batch 0 has no output to be wrong.
    for name, case in by_shape.items():
        if "gradcheck" not in name and "batch0" not in name:
            assert not case.passed and "forward" in case.message, name


def test_conv_with_off_by_one_padding_fails():
    def shifted(x, w, b, stride, padding, dilation, groups):
        return F.conv2d(F.pad(x, (1, -1, 0, 0)), w, b, stride, padding, dilation, groups)  # one pixel right

    result = testing.check_conv2d(shifted, quick=True)
    assert not result.passed
    assert {"f64", "f32", "f32 channels_last", "bf16"} <= failing_checks(result)
    # ...while gradcheck passes: the shifted conv is wrong, but its backward is its true derivative
    assert "gradcheck" not in failing_checks(result)


class WrongWeightGrad(torch.autograd.Function):
    """A conv whose forward is right and whose weight gradient is spatially flipped (a classic wgrad bug)."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        ctx.save_for_backward(x, w, b)
        ctx.params = (stride, padding, dilation, groups)
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, dy):
        x, w, b = ctx.saved_tensors
        with torch.enable_grad():
            xd, wd = x.detach().requires_grad_(), w.detach().requires_grad_()
            bd = None if b is None else b.detach().requires_grad_()
            y = F.conv2d(xd, wd, bd, *ctx.params)
            grads = torch.autograd.grad(y, [t for t in (xd, wd, bd) if t is not None], dy)
        gx, gw = grads[0], grads[1].flip(-1, -2)
        return gx, gw, (grads[2] if b is not None else None), None, None, None, None


def test_conv_with_wrong_backward_fails():
    result = testing.check_conv2d(WrongWeightGrad.apply, quick=True)
    assert not result.passed
    messages = [c.message for c in result.failures]
    assert all("grad_weight" in m or "Jacobian" in m for m in messages), messages
    assert "gradcheck" in failing_checks(result)
    # The forward is right: every failure names the gradient, none the forward.
    assert not any(m.startswith("forward") for m in messages)


def test_conv_in_lower_precision_fails_the_float64_cases():
    result = testing.check_conv2d(lambda x, *a: F.conv2d(x.float(), *[t.float() if torch.is_tensor(t) else t for t in a[:2]],
                                                         *a[2:]).to(x.dtype),
                                  quick=True, dtypes=(torch.float64,), gradgrad=False)
    assert "f64" in failing_checks(result)


def test_conv_that_ignores_strides_fails_the_strided_layout():
    def as_if_contiguous(x, w, b, *a):
        return F.conv2d(x.as_strided(x.shape, torch.empty(x.shape).stride()), w, b, *a)

    result = testing.check_conv2d(as_if_contiguous, dtypes=(torch.float32,), shapes=conv_subset("basic", "odd"),
                                  pad_modes=False, gradgrad=False)
    assert failing_checks(result) == {"f32 strided", "f32 channels_last"}


def test_conv_with_the_wrong_output_layout_fails():
    result = testing.check_conv2d(lambda *a: F.conv2d(*a).contiguous(), dtypes=(torch.float32,),
                                  shapes=conv_subset("basic"), pad_modes=False, gradgrad=False)
    assert failing_checks(result) == {"f32 channels_last"}
    assert "channels_last output" in result.failures[0].message


def test_max_pool_with_wrong_indices_fails():
    def wrong_indices(x, *args):
        y, idx = F.max_pool2d(x, *args[:5], return_indices=True)
        idx = torch.where(idx > 0, idx - 1, idx)
        return (y, idx) if len(args) > 5 and args[5] else y

    result = testing.check_max_pool2d(wrong_indices, quick=True, gradgrad=False)
    assert not result.passed
    assert all("indices differ" in c.message for c in result.failures if "batch0" not in c.name)


def test_max_pool_that_keeps_the_last_tie_fails_only_on_ties():
    def last_tie(x, kernel, stride, padding, dilation, ceil_mode, return_indices=False):
        # Pools the negated-index trick: maxima of the flipped input keep the last maximum of each window.
        y, idx = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
        ties = x.flatten(2).gather(2, (idx.flatten(2) + 1).clamp(max=x.shape[2] * x.shape[3] - 1)).view_as(y) == y
        idx = torch.where(ties & (idx % x.shape[3] < x.shape[3] - 1), idx + 1, idx)
        return (y, idx) if return_indices else y

    shapes = [POOL_SHAPES["ties"], POOL_SHAPES["k3s2p1"]]
    result = testing.check_max_pool2d(last_tie, shapes=shapes, dtypes=(torch.float64,), gradgrad=False)
    failed = {c.name for c in result.failures}
    assert failed and all("ties" in name for name in failed), str(result)


def test_max_pool_with_wrong_backward_fails():
    class Halved(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *args):
            return F.max_pool2d(x, *args)

        @staticmethod
        def backward(ctx, dy):
            raise RuntimeError("no backward")

    result = testing.check_max_pool2d(lambda x, *a: Halved.apply(x, *a[:5]) if not a[5:] or not a[5]
                                      else F.max_pool2d(x, *a), quick=True, gradgrad=False)
    assert "gradcheck" in failing_checks(result)


def test_result_object():
    result = testing.check_max_pool2d(F.max_pool2d, shapes=[POOL_SHAPES["k2s2"]], dtypes=(torch.float32,),
                                      gradgrad=False)
    assert result.passed and bool(result)
    case = result.cases[0]
    assert {"name", "passed", "error", "message"} <= set(vars(case))
    text = str(result)
    assert "| case" in text and "err/tol" in text and case.name in text
    assert "max_pool2d" in result.summary()


# ------------------------------------------------------------------------------------------------ CLI
def run_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "fastconv", "check", *args], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(os.path.dirname(__file__)), timeout=600)


def test_cli_json_schema_and_exit_status(tmp_path):
    out = tmp_path / "check.json"
    proc = run_cli("--quick", "--backend", "cpu", "--algorithm", "direct", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout and "| op" in proc.stdout
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["passed"] is True
    assert {"torch_version", "notes", "cases", "seconds"} <= set(data)
    ops = {c["op"] for c in data["cases"]}
    assert ops == {"conv2d", "max_pool2d"}
    for case in data["cases"]:
        assert {"name", "passed", "status", "error", "ratio", "message", "op", "backend", "algorithm", "check",
                "seconds", "skipped"} <= set(case)
        assert case["status"] in ("pass", "skip")
        assert case["algorithm"] in ("direct", "-")


def test_cli_fails_on_a_broken_kernel(monkeypatch, tmp_path, capsys):
    def broken_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        y, idx = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
        y = y + 1e-3 * (y.numel() > 4)
        return (y, idx) if return_indices else y

    monkeypatch.setattr(fastconv, "max_pool2d", broken_pool)
    out = tmp_path / "check.json"
    status = testing.main(["--quick", "--backend", "cpu", "--op", "max_pool2d", "--json", str(out)])
    assert status == 1
    data = json.loads(out.read_text())
    assert data["passed"] is False and any(c["status"] == "FAIL" for c in data["cases"])
    assert "FAILED" in capsys.readouterr().out


def test_cli_skips_a_backend_without_kernels(monkeypatch, capsys):
    def missing(*args, **kwargs):
        raise NotImplementedError("no kernel registered for fastconv_emulated::max_pool2d_fprop")

    monkeypatch.setattr(fastconv.emulation, "max_pool2d", missing)
    monkeypatch.setattr(fastconv.emulation, "conv2d", missing)
    status = testing.main(["--backend", "emulated", "--quick"])
    out = capsys.readouterr().out
    assert status == 0 and "skip" in out and "no kernel registered" in out


def test_cli_help():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "--json" in proc.stdout and "--quick" in proc.stdout


# ------------------------------------------------------------------------------- python -m fastconv
def test_top_level_help_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "fastconv", "--help"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for command in ("info", "bench", "check", "demo"):
        assert any(line.split()[:1] == [command] and len(line.split()) > 1 for line in lines), proc.stdout


@pytest.mark.parametrize("command", ["bench", "check", "demo"])
def test_each_command_keeps_its_own_help(command, capsys):
    from fastconv.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: python -m fastconv {command}" in capsys.readouterr().out


def test_unknown_command_exits_2_with_argparse_message(capsys):
    from fastconv.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["frobnicate"])
    assert exit_.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_no_command_is_info(monkeypatch):
    from fastconv import bench
    from fastconv.__main__ import main

    seen = []
    monkeypatch.setattr(bench, "info_main", lambda argv: seen.append(argv) or 0)
    assert main([]) == 0 and main(["info", "--help"]) == 0
    assert seen == [[], ["--help"]]
