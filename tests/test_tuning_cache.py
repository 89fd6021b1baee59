"""The autotuner's cache file (fastconv/tuning.py): a damaged file gives a warning and an empty cache, never
an exception; processes tuning into one file at once leave it valid and holding every choice; a choice
recorded on another machine (version, instruction set, thread count) is not applied. Also: fastconv.ops
does not import fastconv.tuning (the tuner reaches conv2d through a hook)."""
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import fastconv
from fastconv import ops, tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tuner():
    fastconv.autotune(False)
    fastconv.clear_autotune_cache()
    yield
    fastconv.autotune(False)
    fastconv.clear_autotune_cache()
    tuning._state["cache"] = None  # later tests must not load this test's file


def problem(channels=4, size=9):
    return torch.randn(1, channels, size, size), torch.randn(16, channels, 3, 3)


def python(code, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


# ------------------------------------------------------------------------------------------- damaged files
DAMAGED = {
    "truncated": '{"fastconv 0.1.0; cpu avx2; 2 threads": {"fprop|N1C4": {"algorithm": "dir',
    "not json": "this is not JSON\n",
    "empty": "",
    "a list": '[{"algorithm": "direct"}]',
    "a number": "42",
    "the old flat format": '{"fprop|N1C4H9W9": {"algorithm": "direct", "times": {}}}',
    "entry not an object": '{"m": {"k": "direct"}}',
    "unknown algorithm": '{"m": {"k": {"algorithm": "fft", "times": {}}}}',
    "auto is no choice": '{"m": {"k": {"algorithm": "auto", "times": {}}}}',
    "times not an object": '{"m": {"k": {"algorithm": "direct", "times": [1, 2]}}}',
    "machine not an object": '{"m": ["direct"]}',
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_damaged_cache_warns_and_starts_empty(tuner, tmp_path, content):
    path = tmp_path / "tune.json"
    path.write_text(content)
    with pytest.warns(RuntimeWarning, match="ignoring the autotune cache"):
        fastconv.autotune(True, cache=str(path))
    assert fastconv.autotune_choices() == {}
    x, w = problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the save re-reads the damaged file once more
        y = fastconv.conv2d(x, w, padding=1)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
    assert len(fastconv.autotune_choices()) == 1
    # The damaged file was replaced by a valid one holding the new choice.
    data = json.loads(path.read_text())
    assert list(data) == [tuning._machine_key("cpu")] and len(data[tuning._machine_key("cpu")]) == 1


def test_undecodable_bytes_warn(tuner, tmp_path):
    path = tmp_path / "tune.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.warns(RuntimeWarning, match="ignoring the autotune cache"):
        fastconv.autotune(True, cache=str(path))
    assert fastconv.autotune_choices() == {}


def test_unwritable_cache_warns_and_keeps_the_choice(tuner, tmp_path):
    path = tmp_path / "no such directory" / "tune.json"
    fastconv.autotune(True, cache=str(path))
    x, w = problem()
    with pytest.warns(RuntimeWarning, match="could not save the autotune cache"):
        fastconv.conv2d(x, w, padding=1)
    assert len(fastconv.autotune_choices()) == 1


# ------------------------------------------------------------------------------------------- machine part
def forced_cache(path, machine, key, algorithm):
    path.write_text(json.dumps({machine: {key: {"algorithm": algorithm, "times": {}}}}))


def other_machines():
    here = tuning._machine_key("cpu")
    version, cpu, threads = here.split("; ")
    return {
        "other version": "; ".join(["fastconv 0.0.0-other", cpu, threads]),
        "other instruction set": "; ".join([version, "cpu portable" if cpu != "cpu portable" else "cpu avx2",
                                            threads]),
        "other thread count": "; ".join([version, cpu, f"{torch.get_num_threads() + 3} threads"]),
        "a GPU": "; ".join([version, "cuda NVIDIA H200 sm_90"]),
    }


def test_machine_key_names_version_isa_and_threads():
    key = tuning._machine_key("cpu")
    assert tuning._VERSION in key and fastconv.build_info()["cpu_isa"] in key
    assert f"{torch.get_num_threads()} threads" in key


def test_choice_of_this_machine_is_applied(tuner, tmp_path):
    x, w = problem()
    plan = fastconv.explain(x, w, padding=1, verbose=False)
    other = "im2col" if plan["algorithm"].startswith("direct") else "direct"
    path = tmp_path / "tune.json"
    forced_cache(path, tuning._machine_key("cpu"), plan["key"], other)
    fastconv.autotune(True, cache=str(path))
    plan = fastconv.explain(x, w, padding=1, verbose=False)
    assert plan["autotuned"] and plan["algorithm"].startswith(other)


@pytest.mark.parametrize("which", list(other_machines()))
def test_choice_of_another_machine_is_not_applied(tuner, tmp_path, which):
    x, w = problem()
    key = fastconv.explain(x, w, padding=1, verbose=False)["key"]
    machine = other_machines()[which]
    path = tmp_path / "tune.json"
    forced_cache(path, machine, key, "direct_simple")  # a choice no timing here would make
    fastconv.autotune(True, cache=str(path))
    assert fastconv.autotune_choices() == {}
    assert not fastconv.explain(x, w, padding=1, verbose=False)["autotuned"]
    fastconv.conv2d(x, w, padding=1)  # timed here instead
    entry = fastconv.autotune_choices()[key]
    assert entry["algorithm"] in tuning.CANDIDATES and set(entry["times"]) == set(tuning.CANDIDATES)
    # The other machine's choice stays in the file beside this machine's.
    data = json.loads(path.read_text())
    assert data[machine][key]["algorithm"] == "direct_simple"
    assert data[tuning._machine_key("cpu")][key]["algorithm"] == entry["algorithm"]


def test_thread_count_change_switches_machine(tuner, tmp_path):
    path = tmp_path / "tune.json"
    fastconv.autotune(True, cache=str(path))
    x, w = problem()
    threads = torch.get_num_threads()
    fastconv.conv2d(x, w, padding=1)
    try:
        torch.set_num_threads(threads + 1)
        fastconv.conv2d(x, w, padding=1)
    finally:
        torch.set_num_threads(threads)
    data = json.loads(path.read_text())
    assert {f"{threads} threads", f"{threads + 1} threads"} == {m.split("; ")[-1] for m in data}


# ------------------------------------------------------------------------------------------- many processes
TUNE_IN_ONE_PROCESS = """
import os, sys, time, torch, fastconv
torch.set_num_threads(1)
path, i, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fastconv.autotune(True, cache=path)
open(f"{path}.ready{i}", "w").close()  # start together, once every process has imported fastconv
deadline = time.time() + 120
while sum(os.path.exists(f"{path}.ready{j}") for j in range(n)) < n and time.time() < deadline:
    time.sleep(0.005)
for j in range(PROBLEMS):  # problems of its own, one save into the shared file each
    fastconv.conv2d(torch.randn(1, 2 + i, 5 + j, 5), torch.randn(4, 2 + i, 3, 3), padding=1)
print(len(fastconv.autotune_choices()))
""".replace("PROBLEMS", "6")


def test_save_merges_what_another_process_wrote_since_the_load(tuner, tmp_path):
    path = tmp_path / "tune.json"
    fastconv.autotune(True, cache=str(path))
    machine = tuning._machine_key("cpu")
    # another process saves its choice after this one loaded the (then absent) file
    forced_cache(path, machine, "fprop|another process's problem", "im2col")
    x, w = problem()
    fastconv.conv2d(x, w, padding=1)
    entries = json.loads(path.read_text())[machine]
    assert len(entries) == 2 and entries["fprop|another process's problem"]["algorithm"] == "im2col"


def test_concurrent_processes_merge_into_one_valid_file(tmp_path):
    path = tmp_path / "tune.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", TUNE_IN_ONE_PROCESS, str(path), str(i), "4"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0 and out.strip() == "6", err
    data = json.loads(path.read_text())
    (machine, entries), = data.items()
    assert machine.endswith("; 1 threads") and len(entries) == 24
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")], "a temporary file was left behind"


# ------------------------------------------------------------------------------------------- imports
def test_ops_does_not_import_tuning():
    # The package's __init__ imports both; load fastconv.ops without it to see what ops itself pulls in.
    code = """
import importlib.util, sys, types, torch
spec = importlib.util.find_spec("fastconv")
package = types.ModuleType("fastconv")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["fastconv"] = package
import fastconv.ops
assert fastconv.ops.autotune_hook is None
print(sorted(m for m in sys.modules if m.startswith("fastconv")))
"""
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert "fastconv.ops" in proc.stdout and "fastconv.tuning" not in proc.stdout


def test_hook_is_installed_only_while_the_tuner_is_on(tuner):
    assert ops.autotune_hook is None
    fastconv.autotune(True)
    assert ops.autotune_hook is tuning.maybe_autotune
    fastconv.autotune(False)
    assert ops.autotune_hook is None
