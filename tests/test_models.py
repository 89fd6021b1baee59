"""The classic CNNs end to end: each model is built, deep-copied, the copy converted with
fastconv.nn.convert, and one training step (forward, cross-entropy, backward) of both must agree: the
outputs, the input gradient, every parameter gradient and every buffer (BatchNorm running statistics).
Nothing is downloaded: the torchvision models are built with weights=None."""
import copy
import time

import pytest
import torch
import torch.nn.functional as F
import torchvision

import fastconv.nn as fnn

NUM_CLASSES = 10


def lenet5():
    return fnn.LeNet5(NUM_CLASSES, layers="torch")


def alexnet():
    return torchvision.models.alexnet(weights=None, num_classes=NUM_CLASSES)


def vgg11():
    return torchvision.models.vgg11(weights=None, num_classes=NUM_CLASSES)


def googlenet():
    return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True,
                                        num_classes=NUM_CLASSES)


def resnet18():
    return torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES)


# name: (builder, input channels and size, expected number of replaced modules (convolutions + max pools))
MODELS = {
    "lenet5": (lenet5, (1, 32, 32), 3 + 2),
    "alexnet": (alexnet, (3, 67, 67), 5 + 3),
    "vgg11": (vgg11, (3, 64, 64), 8 + 5),
    "googlenet": (googlenet, (3, 64, 64), 3 + 9 * 6 + 4 + 9),  # stem, 9 inceptions (6 convs + 1 pool), 4 pools
    "resnet18": (resnet18, (3, 64, 64), 1 + 16 + 3 + 1),  # stem, 8 blocks x 2, 3 downsamples, 1 pool
}


def _build(name, dtype):
    builder, shape, _ = MODELS[name]
    torch.manual_seed(0)
    model = builder().to(dtype)
    x = torch.randn(2, *shape, dtype=dtype)
    target = torch.tensor([3, 7])
    return model, x, target


def _train_step(model, x, target, seed=1234):
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)  # the same dropout masks for both models
    out = model(x)
    F.cross_entropy(out, target).backward()
    return out, x.grad


def _assert_close(actual, expected, tol, what):
    """Elementwise |actual - expected| <= tol * max|expected| (the scale of the whole tensor, so entries
    that are near zero by cancellation do not need a looser rule)."""
    assert actual is not None, f"{what}: no gradient"
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    assert torch.isfinite(actual).all(), f"{what}: not finite"
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= tol * max(scale, 1e-30), f"{what}: max error {error:.3g}, scale {scale:.3g}, tol {tol:g}"


def check_model(name, dtype, tol, algorithm="auto"):
    model, x, target = _build(name, dtype)
    converted = copy.deepcopy(model)
    report = fnn.convert(converted, algorithm=algorithm)

    assert len(report.replaced) == MODELS[name][2], str(report)
    assert report.skipped == [], str(report)
    assert sum(isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d)) for m in converted.modules()) == len(
        report.replaced
    )
    assert all(type(m) in (fnn.Conv2d, fnn.MaxPool2d) for m in converted.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d)))
    assert all(m.algorithm == algorithm for m in converted.modules() if isinstance(m, fnn.Conv2d))

    out_ref, dx_ref = _train_step(model, x, target)
    out, dx = _train_step(converted, x, target)

    _assert_close(out, out_ref, tol, "output")
    _assert_close(dx, dx_ref, tol, "input gradient")
    params_ref = dict(model.named_parameters())
    params = dict(converted.named_parameters())
    assert params.keys() == params_ref.keys()
    for pname, p in params_ref.items():
        _assert_close(params[pname].grad, p.grad, tol, f"gradient of {pname}")
    buffers_ref = dict(model.named_buffers())
    for bname, b in converted.named_buffers():
        if b.is_floating_point():
            _assert_close(b, buffers_ref[bname], tol, f"buffer {bname}")
        else:
            assert torch.equal(b, buffers_ref[bname]), bname


FLOAT64_TOL = 1e-10
FLOAT32_TOL = 1e-3  # of the tensor's largest entry; BatchNorm over 8 values per channel amplifies rounding,
# while a wrong element, a missing bias or an off-by-one window is off by the size of the values themselves


# VGG-11's classifier alone holds 120 M parameters (1 GB per float64 copy): slow.
@pytest.mark.parametrize("name", ["lenet5", "alexnet", pytest.param("vgg11", marks=pytest.mark.slow), "googlenet",
                                  "resnet18"])
def test_model_float64(name):
    check_model(name, torch.float64, FLOAT64_TOL)


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg11", "googlenet", "resnet18"])
def test_model_float32(name):
    check_model_float32(name)


def _train_step_results(model, x, target):
    out, dx = _train_step(model, x, target)
    results = {"output": out, "input gradient": dx}
    results.update((f"gradient of {n}", p.grad) for n, p in model.named_parameters())
    return results


def check_model_float32(name, factor=8.0):
    """float32 has no exact answer to compare with, and BatchNorm over a few values per channel amplifies
    rounding differently in every summation order. So both float32 runs, converted and not, are measured
    against the float64 truth: fastconv's error may be at most `factor` times PyTorch's own float32 error
    (plus 1e-6 of the scale). A real bug (a wrong element, a missing bias, an off-by-one window) is off by
    the size of the values, hundreds of times more."""
    model64, x64, target = _build(name, torch.float64)
    model32 = copy.deepcopy(model64).float()
    converted = copy.deepcopy(model32)
    assert len(fnn.convert(converted).replaced) == MODELS[name][2]
    truth = _train_step_results(model64, x64, target)
    theirs = _train_step_results(model32, x64.float(), target)
    ours = _train_step_results(converted, x64.float(), target)
    assert ours.keys() == truth.keys()
    for what, exact in truth.items():
        assert ours[what] is not None and ours[what].dtype == torch.float32, what
        scale = exact.abs().max().item()
        error_ours = (ours[what].double() - exact).abs().max().item()
        error_torch = (theirs[what].double() - exact).abs().max().item()
        assert error_ours <= factor * error_torch + 1e-6 * scale, (
            f"{what}: fastconv float32 error {error_ours:.3g}, PyTorch float32 error {error_torch:.3g}, "
            f"scale {scale:.3g}")


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("name", ["lenet5", "resnet18"])
def test_model_algorithms(name, algorithm):
    check_model(name, torch.float64, FLOAT64_TOL, algorithm)


def test_lenet5_shapes_and_layers():
    """LeNet-5 as the paper draws it: C1 6@28x28, S2 6@14x14, C3 16@10x10, S4 16@5x5, C5 120, F6 84."""
    model = fnn.LeNet5()
    assert type(model.c1) is fnn.Conv2d and type(model.s2) is fnn.MaxPool2d
    shapes = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
             for n in ("c1", "s2", "c3", "s4", "c5", "f6", "output")]
    out = model(torch.randn(2, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes == {"c1": (2, 6, 28, 28), "s2": (2, 6, 14, 14), "c3": (2, 16, 10, 10), "s4": (2, 16, 5, 5),
                      "c5": (2, 120, 1, 1), "f6": (2, 84), "output": (2, 10)}
    assert out.shape == (2, 10)
    assert model(torch.randn(1, 32, 32)).shape == (10,)
    assert sum(p.numel() for p in model.parameters()) == 61706


def test_lenet5_torch_and_fastconv_layers_initialise_alike():
    torch.manual_seed(5)
    fast = fnn.LeNet5(layers="fastconv", algorithm="im2col")
    torch.manual_seed(5)
    ref = fnn.LeNet5(layers="torch")
    assert type(ref.c1) is torch.nn.Conv2d and fast.c1.algorithm == "im2col"
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), name
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="layers"):
        fnn.LeNet5(layers="keras")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "vgg11", "googlenet", "resnet18"])
def test_model_float32_224(name):
    """The models at their native 224x224 input size (slow: seconds to a minute each on 2 cores)."""
    builder, shape, _ = MODELS[name]
    torch.manual_seed(0)
    model = builder()
    converted = copy.deepcopy(model)
    fnn.convert(converted)
    x = torch.randn(2, 3, 224, 224)
    target = torch.tensor([1, 2])
    start = time.perf_counter()
    out_ref, dx_ref = _train_step(model, x, target)
    out, dx = _train_step(converted, x, target)
    _assert_close(out, out_ref, FLOAT32_TOL, "output")
    _assert_close(dx, dx_ref, FLOAT32_TOL, "input gradient")
    for (pname, p), q in zip(converted.named_parameters(), model.parameters()):
        _assert_close(p.grad, q.grad, FLOAT32_TOL, f"gradient of {pname}")
    assert time.perf_counter() - start < 600
