"""python -m fastconv demo, on a short run."""
import sys

import pytest
import torch

pytest.importorskip("sklearn")

from fastconv import demo  # noqa: E402
from fastconv.__main__ import main as fastconv_main  # noqa: E402


def test_data_is_upscaled_and_split_once():
    x_train, y_train, x_test, y_test = demo.load_digits_32()
    assert x_train.shape[1:] == x_test.shape[1:] == (1, 32, 32)
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 450
    assert x_train.dtype == torch.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert set(y_test.tolist()) == set(range(10))
    again = demo.load_digits_32()
    assert torch.equal(again[0], x_train) and torch.equal(again[3], y_test)


def test_run_short_trains_both_alike():
    results = demo.run(epochs=1, batch_size=16, train_limit=800, seed=3, progress=False)
    assert [r.name for r in results] == ["fastconv (auto)", "torch.nn"]
    fast, ref = results
    assert fast.accuracy > 0.5, fast
    # Same initial weights, same batches: the two trainings follow the same path.
    assert abs(fast.accuracy - ref.accuracy) <= 0.02, results
    assert abs(fast.losses[-1] - ref.losses[-1]) <= 1e-3 * ref.losses[-1], results
    assert len(fast.epoch_seconds) == 1 and fast.epoch_seconds[0] > 0


def test_main_prints_the_table(capsys):
    status = fastconv_main(["demo", "--epochs", "1", "--train-limit", "320", "--no-torch", "--no-progress",
                            "--algorithm", "im2col", "--batch-size", "16"])
    assert status == 0
    out = capsys.readouterr().out
    assert "LeNet-5" in out and "1 epoch(s), batch 16" in out
    assert "fastconv (im2col)" in out and "torch.nn" not in out
    row = next(line for line in out.splitlines() if line.startswith("fastconv (im2col)"))
    accuracy = float(row.split()[2])
    assert 0 <= accuracy <= 100, row


def test_progress_bar_goes_to_stderr(capsys):
    demo.run(epochs=1, batch_size=64, train_limit=128, compare_torch=False, progress=True)
    captured = capsys.readouterr()
    assert "2/2" in captured.err and "batch" in captured.err


def test_missing_scikit_learn_names_the_demo_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` raise ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert demo.main(["--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "scikit-learn" in err and "fastconv[demo]" in err


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        demo.main(["--algorithm", "fft"])
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "0"])
