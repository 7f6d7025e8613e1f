"""modeling_pvt.training.runs, the task-independent parts of a training run: folder names, what a run may never replace,
resuming, and the CPU thread choice (decided from a mocked measurement: no timing is asserted)."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from modeling_pvt import PvtForImageClassification
from modeling_pvt.training import runs
from modeling_pvt.training.runs import (
    MEASURE_MIN_STEPS,
    check_output_dir,
    choose_cpu_threads,
    data_label,
    default_output_dir,
    describe_resume,
    model_label,
    resolve_checkpoint,
    time_training_steps,
)


def test_run_names_come_from_the_model_and_the_data():
    assert default_output_dir(model_label(None, "pvt-tiny"), data_label("sklearn-digits")) == Path(
        "outputs/pvt-tiny-sklearn-digits"
    )
    assert model_label(None, "configs/my-pvt.json") == "my-pvt"
    assert model_label("outputs/pvt-tiny-sklearn-digits/model") == "pvt-tiny-sklearn-digits"
    assert model_label("org/pvt-small-224") == "pvt-small-224"
    assert data_label("/data/imagenet/train") == "imagenet" and data_label("/data/beans/") == "beans"
    assert data_label("AI-Lab-Makerere/beans") == "beans"


def _finished(folder: Path) -> Path:
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")
    return folder


def test_a_finished_model_is_never_replaced_unless_asked(tmp_path):
    run = _finished(tmp_path / "run")
    for resume in (None, "last"):
        with pytest.raises(FileExistsError) as raised:
            check_output_dir(run, overwrite=False, resume=resume)
        assert "--output_dir" in str(raised.value) and "--overwrite_output_dir true" in str(raised.value)
    check_output_dir(run, overwrite=True, resume=None)
    check_output_dir(tmp_path / "new", overwrite=False, resume=None)
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", overwrite=False, resume=None)


def test_an_unfinished_run_is_resumed_not_silently_restarted(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (run / "checkpoint-8").mkdir()  # killed while saving: no trainer_state.json
    with pytest.raises(FileExistsError, match="unfinished run.*--resume_from_checkpoint last.*--overwrite_output_dir"):
        check_output_dir(run, overwrite=False, resume=None)
    check_output_dir(run, overwrite=False, resume="last")
    checkpoint = resolve_checkpoint("last", run)
    assert checkpoint == str(run / "checkpoint-4")
    assert describe_resume("last", checkpoint, run) == f"from {run / 'checkpoint-4'}"
    assert "training starts fresh" in describe_resume("last", resolve_checkpoint("last", tmp_path), tmp_path)


def _never_measured(threads):
    raise AssertionError("a short run must not be measured")


@pytest.mark.parametrize(("one", "many", "expected"), [(0.1, 0.3, 1), (0.3, 0.1, 4)])
def test_auto_threads_take_the_faster_measurement(one, many, expected):
    measured = []

    def measure(threads):
        measured.append(threads)
        return {1: one, 4: many}[threads]

    choice = choose_cpu_threads("auto", cores=4, image_pixels=224 * 224, total_steps=10_000, measure=measure)
    assert choice.threads == expected and measured == [1, 4]
    assert "measured 2 training steps" in choice.reason and f"{one:.3f} s/step" in choice.reason


def test_short_runs_decide_by_image_size_without_measuring():
    short = MEASURE_MIN_STEPS - 1
    small = choose_cpu_threads("auto", cores=4, image_pixels=32 * 32, total_steps=short, measure=_never_measured)
    large = choose_cpu_threads("auto", cores=4, image_pixels=224 * 224, total_steps=short, measure=_never_measured)
    assert (small.threads, large.threads) == (1, 4) and "small images" in small.describe()


def test_explicit_thread_settings_are_kept():
    assert choose_cpu_threads("3", cores=4, image_pixels=1, total_steps=10**6, measure=_never_measured).threads == 3
    assert choose_cpu_threads(0, cores=4, image_pixels=1, total_steps=10**6, measure=_never_measured).threads is None
    assert choose_cpu_threads("auto", cores=1, image_pixels=1, total_steps=10**6, measure=_never_measured).threads == 1
    with pytest.raises(ValueError, match="Pass auto, 0"):
        choose_cpu_threads("-2", cores=4, image_pixels=1, total_steps=1, measure=_never_measured)


def test_measuring_leaves_the_model_and_the_random_stream_as_they_were():
    model = PvtForImageClassification(tiny_config(drop_path_rate=0.1)).eval()
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    inputs = {"pixel_values": torch.randn(2, 3, 32, 32), "labels": torch.tensor([0, 1])}
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    assert time_training_steps(model, inputs, threads=1) > 0
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert not model.training and all(parameter.grad is None for parameter in model.parameters())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name


class _FakeLibc:
    def __init__(self, glibc: bool = True, accepts: bool = True):
        self.calls, self.accepts = [], accepts
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.36"

    def mallopt(self, parameter, value):
        self.calls.append((parameter, value))
        return int(self.accepts)


@pytest.mark.parametrize(
    "libc, keep, expected, calls",
    [
        (_FakeLibc(), True, "kept for reuse", [(-3, 2**30), (-1, 2**30)]),
        (_FakeLibc(), False, "returned to the system (glibc's default", []),
        (_FakeLibc(accepts=False), True, "glibc refused", [(-3, 2**30)]),
        (_FakeLibc(glibc=False), True, "this C library's default", []),
    ],
    ids=["glibc", "opted-out", "refused", "not-glibc"],
)
def test_freed_memory_is_kept_only_by_glibc_and_only_when_asked(monkeypatch, libc, keep, expected, calls):
    monkeypatch.setattr(runs.ctypes, "CDLL", lambda name: libc)
    assert expected in runs.keep_freed_memory(keep)
    assert libc.calls == calls
