"""fastconv.nn: the layers' parity with torch.nn (signature, defaults, init, repr, state_dict, outputs and
gradients), and convert()."""
import copy
import inspect
import pickle

import pytest
import torch

import fastconv
import fastconv.nn as fnn

TIGHT = dict(rtol=1e-12, atol=1e-12)


def _both(cls_fast, cls_torch, *args, seed=0, **kwargs):
    torch.manual_seed(seed)
    fast = cls_fast(*args, **kwargs)
    torch.manual_seed(seed)
    ref = cls_torch(*args, **kwargs)
    return fast, ref


def _compare_forward_backward(fast, ref, x, **tol):
    """Runs both modules on copies of x; compares the outputs, the input gradient and every parameter
    gradient (by name)."""
    xf = x.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    of, orf = fast(xf), ref(xr)
    if isinstance(orf, tuple):
        torch.testing.assert_close(of[1], orf[1], rtol=0, atol=0)
        of, orf = of[0], orf[0]
    torch.testing.assert_close(of, orf, **tol)
    g = torch.randn_like(orf)
    of.backward(g)
    orf.backward(g)
    torch.testing.assert_close(xf.grad, xr.grad, **tol)
    params_f, params_r = dict(fast.named_parameters()), dict(ref.named_parameters())
    assert params_f.keys() == params_r.keys()
    for name in params_r:
        torch.testing.assert_close(params_f[name].grad, params_r[name].grad, **tol, msg=name)


# ----------------------------------------------------------------------------------------------------
# Conv2d
# ----------------------------------------------------------------------------------------------------
def test_conv2d_signature_is_torch_plus_algorithm():
    fast = inspect.signature(fnn.Conv2d.__init__).parameters
    ref = inspect.signature(torch.nn.Conv2d.__init__).parameters
    assert list(fast)[:-1] == list(ref)
    for name in ref:
        assert fast[name].default == ref[name].default, name
        assert fast[name].kind == ref[name].kind, name
    assert fast["algorithm"].kind is inspect.Parameter.KEYWORD_ONLY
    assert fast["algorithm"].default == "auto"
    assert issubclass(fnn.Conv2d, torch.nn.Conv2d)


CONV_ARGS = [
    dict(in_channels=3, out_channels=8, kernel_size=3),
    dict(in_channels=3, out_channels=8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding="same", dilation=2, bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=2, padding="valid", groups=2),
    dict(in_channels=6, out_channels=6, kernel_size=3, padding=1, groups=6, padding_mode="reflect"),
    dict(in_channels=2, out_channels=3, kernel_size=4, stride=3, padding=2, padding_mode="circular"),
    dict(in_channels=2, out_channels=3, kernel_size=1, dilation=(1, 3), padding_mode="replicate"),
]


@pytest.mark.parametrize("kwargs", CONV_ARGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_conv2d_constructor_init_repr_forward_match_torch(kwargs):
    fast, ref = _both(fnn.Conv2d, torch.nn.Conv2d, **kwargs, dtype=torch.float64)
    assert repr(fast) == repr(ref)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode", "transposed", "output_padding", "_reversed_padding_repeated_twice"):
        assert getattr(fast, attr) == getattr(ref, attr), attr
    assert fast.algorithm == "auto"
    # Same seed, same initialisation.
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    x = torch.randn(2, kwargs["in_channels"], 11, 13, dtype=torch.float64)
    _compare_forward_backward(fast, ref, x, **TIGHT)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "im2col_blas"])
def test_conv2d_algorithm_is_used_and_shown(algorithm, monkeypatch):
    torch.manual_seed(0)
    fast = fnn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64, algorithm=algorithm)
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64)
    assert repr(fast) == repr(ref)[:-1] + f", algorithm='{algorithm}')"
    seen = []
    real = fastconv.ops.conv2d

    def spy(*args, **kwargs):
        seen.append(kwargs.get("algorithm"))
        return real(*args, **kwargs)

    monkeypatch.setattr(fastconv.ops, "conv2d", spy)
    _compare_forward_backward(fast, ref, torch.randn(2, 3, 8, 9, dtype=torch.float64), **TIGHT)
    assert seen == [algorithm]


def test_conv2d_rejects_unknown_algorithm():
    with pytest.raises(ValueError, match="algorithm"):
        fnn.Conv2d(3, 4, 3, algorithm="winograd")


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding,stride", [(1, 1), ((2, 1), 2), ("same", 1), ((0, 3), (1, 2))])
def test_conv2d_padding_modes_match_torch(padding_mode, padding, stride):
    fast, ref = _both(fnn.Conv2d, torch.nn.Conv2d, 3, 5, (3, 4), stride=stride, padding=padding,
                      padding_mode=padding_mode, dtype=torch.float64)
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    _compare_forward_backward(fast, ref, x, **TIGHT)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_conv2d_unbatched_input(padding_mode):
    fast, ref = _both(fnn.Conv2d, torch.nn.Conv2d, 3, 5, 3, padding=1, padding_mode=padding_mode,
                      dtype=torch.float64)
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    assert fast(x).shape == (5, 7, 6)
    _compare_forward_backward(fast, ref, x, **TIGHT)


def test_conv2d_float32_matches_torch():
    fast, ref = _both(fnn.Conv2d, torch.nn.Conv2d, 16, 32, 3, padding=1)
    _compare_forward_backward(fast, ref, torch.randn(4, 16, 12, 12), rtol=1e-4, atol=1e-4)


def test_conv2d_state_dict_round_trip():
    torch.manual_seed(1)
    ref = torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
    fast = fnn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect", algorithm="im2col")
    assert fast.state_dict().keys() == ref.state_dict().keys()
    fast.load_state_dict(ref.state_dict(), strict=True)
    for p, q in zip(fast.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    x = torch.randn(2, 3, 10, 10)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)
    # ...and back, through a file-like round trip as torch.save would do it.
    back = torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
    with torch.no_grad():
        fast.weight.mul_(2)
    back.load_state_dict(pickle.loads(pickle.dumps(fast.state_dict())), strict=True)
    assert torch.equal(back.weight, fast.weight) and torch.equal(back.bias, fast.bias)
    assert not torch.equal(back.weight, ref.weight)


def test_conv2d_module_deepcopy_and_pickle_keep_algorithm():
    fast = fnn.Conv2d(2, 3, 3, algorithm="direct")
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert type(clone) is fnn.Conv2d and clone.algorithm == "direct"
        assert torch.equal(clone.weight, fast.weight)


# ----------------------------------------------------------------------------------------------------
# MaxPool2d
# ----------------------------------------------------------------------------------------------------
def test_maxpool2d_signature_is_torch():
    assert inspect.signature(fnn.MaxPool2d) == inspect.signature(torch.nn.MaxPool2d)
    assert issubclass(fnn.MaxPool2d, torch.nn.MaxPool2d)


POOL_ARGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
    dict(kernel_size=3, stride=1, padding=1, ceil_mode=True),
    dict(kernel_size=2, dilation=2, ceil_mode=True),
]


@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize("kwargs", POOL_ARGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_maxpool2d_matches_torch(kwargs, return_indices):
    fast = fnn.MaxPool2d(**kwargs, return_indices=return_indices)
    ref = torch.nn.MaxPool2d(**kwargs, return_indices=return_indices)
    assert repr(fast) == repr(ref)
    assert vars(fast) == vars(ref)
    x = torch.randn(2, 3, 11, 12, dtype=torch.float64)
    out = fast(x)
    assert isinstance(out, tuple) == return_indices
    _compare_forward_backward(fast, ref, x, rtol=0, atol=0)


def test_maxpool2d_unbatched_input():
    fast, ref = fnn.MaxPool2d(3, 2, 1, return_indices=True), torch.nn.MaxPool2d(3, 2, 1, return_indices=True)
    x = torch.randn(4, 9, 8, dtype=torch.float64)
    assert fast(x)[0].shape == (4, 5, 4)
    _compare_forward_backward(fast, ref, x, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------
# convert
# ----------------------------------------------------------------------------------------------------
class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))) + x


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="replicate"),
                                        torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.blocks = torch.nn.ModuleList([Block(8), Block(8)])
        self.heads = torch.nn.ModuleDict({
            "a": torch.nn.Sequential(torch.nn.Conv2d(8, 4, 1), torch.nn.MaxPool2d(3, 2, ceil_mode=True)),
            "b": torch.nn.Conv2d(8, 4, 3, stride=2, padding=1, groups=4),
        })

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.heads["a"](x) + self.heads["b"](x)


NET_REPLACED = ["stem.0", "stem.2", "blocks.0.conv", "blocks.1.conv", "heads.a.0", "heads.a.1", "heads.b"]


def _modules_by_name(model):
    return dict(model.named_modules())


def test_convert_nested_model_in_place():
    torch.manual_seed(0)
    model = Net().double()
    ref = copy.deepcopy(model)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    before = _modules_by_name(model)

    report = fnn.convert(model, algorithm="direct")

    assert isinstance(report, fnn.ConversionReport)
    assert report.replaced == NET_REPLACED
    assert report.skipped == []
    after = _modules_by_name(model)
    assert after.keys() == before.keys()
    for name, module in after.items():
        assert module is before[name], name  # converted in place: the very same module objects
        if name in NET_REPLACED:
            expected = fnn.Conv2d if isinstance(ref.get_submodule(name), torch.nn.Conv2d) else fnn.MaxPool2d
            assert type(module) is expected, name
        else:
            assert type(module) is type(ref.get_submodule(name)), name
    for name, p in model.named_parameters():
        assert p is params[name], name
    for name, b in model.named_buffers():
        assert b is buffers[name], name
    assert all(m.algorithm == "direct" for m in model.modules() if isinstance(m, fnn.Conv2d))
    assert model.stem[0].padding_mode == "replicate"
    assert "algorithm='direct'" in repr(model)

    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    _compare_forward_backward(model, ref, x, **TIGHT)


def test_convert_preserves_dtype_device_and_mode():
    model = Net().to(torch.float64).eval()
    model.blocks[1].train()
    modes = {name: m.training for name, m in model.named_modules()}
    fnn.convert(model)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in model.parameters())
    assert model(torch.randn(1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_convert_on_meta_device():
    with torch.device("meta"):
        model = Net()
    fnn.convert(model)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model(torch.empty(2, 3, 16, 16, device="meta")).shape == (2, 4, 4, 4)


@pytest.mark.needs_cuda
def test_convert_on_cuda():
    model = Net().cuda()
    fnn.convert(model)
    assert all(p.is_cuda for p in model.parameters())


def test_convert_twice_is_a_no_op():
    model = Net()
    first = fnn.convert(model, algorithm="im2col")
    state = {name: (type(m), getattr(m, "algorithm", None)) for name, m in model.named_modules()}
    second = fnn.convert(model, algorithm="direct")
    assert second.replaced == []
    assert [name for name, _ in second.skipped] == first.replaced
    assert all(reason.startswith("already fastconv") for _, reason in second.skipped)
    assert "algorithm='im2col'" in dict(second.skipped)["stem.0"]
    assert {name: (type(m), getattr(m, "algorithm", None)) for name, m in model.named_modules()} == state


class MyPool(torch.nn.MaxPool2d):
    def forward(self, x):
        return super().forward(x) * 2


class MyConv(torch.nn.Conv2d):
    pass


def test_convert_skips_what_it_cannot_serve():
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 2, 3),
        torch.nn.Conv3d(2, 2, 3),
        torch.nn.ConvTranspose2d(2, 2, 3),
        MyPool(2),
        MyConv(2, 2, 3),
        torch.nn.MaxPool1d(2),
        torch.nn.AdaptiveMaxPool2d(2),
        fnn.Conv2d(2, 2, 3),
        torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2)),
    )
    report = fnn.convert(model)
    assert report.replaced == ["8.0"]
    skipped = dict(report.skipped)
    assert list(skipped) == ["0", "1", "2", "3", "4", "5", "6", "7"]
    assert "Conv1d" in skipped["0"] and "Conv3d" in skipped["1"] and "ConvTranspose2d" in skipped["2"]
    assert "MyPool" in skipped["3"] and "subclass" in skipped["3"]
    assert "MyConv" in skipped["4"] and "subclass" in skipped["4"]
    assert "MaxPool1d" in skipped["5"] and "AdaptiveMaxPool2d" in skipped["6"]
    assert skipped["7"].startswith("already fastconv")
    for i, cls in enumerate([torch.nn.Conv1d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, MyPool, MyConv,
                             torch.nn.MaxPool1d, torch.nn.AdaptiveMaxPool2d, fnn.Conv2d]):
        assert type(model[i]) is cls
    assert type(model[8][0]) is fnn.Conv2d and type(model[8][2]) is torch.nn.AvgPool2d


def test_convert_root_module_and_shared_modules():
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    assert fnn.convert(conv).replaced == [""]
    assert type(conv) is fnn.Conv2d and conv.algorithm == "auto"

    shared = torch.nn.Conv2d(3, 3, 1)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    report = fnn.convert(model)
    assert report.replaced == ["0"]
    assert model[0] is model[2] is shared and type(shared) is fnn.Conv2d


def test_convert_rejects_unknown_algorithm():
    model = Net()
    with pytest.raises(ValueError, match="algorithm"):
        fnn.convert(model, algorithm="fft")
    assert not any(isinstance(m, (fnn.Conv2d, fnn.MaxPool2d)) for m in model.modules())


def test_convert_keeps_state_dict_and_optimizer_working():
    torch.manual_seed(0)
    model = Net()
    state = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fnn.convert(model)
    assert model.state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()  # the optimizer holds the very parameters the converted model trains
    assert not torch.equal(model.stem[0].weight, state["stem.0.weight"])


def test_report_str():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv1d(2, 2, 1))
    text = str(fnn.convert(model))
    assert text.splitlines()[0] == "fastconv.nn.convert: 1 module(s) replaced, 1 skipped"
    assert "replaced  0" in text
    assert "skipped   1: torch.nn.modules.conv.Conv1d has no fastconv kernel" in text
    root = torch.nn.MaxPool2d(2)
    assert "replaced  <root>" in str(fnn.convert(root))


def test_nn_is_exported():
    assert fastconv.nn is fnn
    assert "nn" in fastconv.__all__
