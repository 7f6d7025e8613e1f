"""Helpers shared by test files: running code in a fresh interpreter that cannot import this package, laying a
saved folder into a temporary Hugging Face cache so that a repo id resolves offline exactly as for a user, and
killing a training run with SIGKILL once it has written a checkpoint, and a small segmentation folder."""

import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]  # the repository root

# Makes `import modeling_pvt` (the installed package) impossible, so only Hub remote code can be used.
_BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys
    class _Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_pvt" or name.startswith("modeling_pvt."):
                raise ImportError("modeling_pvt is deliberately not importable in this process")
    sys.meta_path.insert(0, _Blocker())
    try:
        import modeling_pvt
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker failed: modeling_pvt is importable")
    """
)


def run_without_package(code: str, tmp_path: Path, env: dict | None = None, timeout: int = 300) -> str:
    """Runs `code` in a fresh Python process where `import modeling_pvt` fails; returns stdout, fails on error."""
    script = tmp_path / "fresh_process.py"
    script.write_text(_BLOCK_PACKAGE + textwrap.dedent(code))
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"fresh process failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
    return result.stdout


def lay_out_as_hub_cache(folder: Path, hf_home: Path, repo_id: str, revision: str = "0" * 40) -> dict:
    """Copies a saved folder into `hf_home` in the Hub cache layout; returns the env that makes `repo_id` resolve."""
    repo_dir = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / revision)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return {"HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1"}


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# The code files a saved folder carries (transformers copies each remote-code module and its relative imports).
REMOTE_CODE_FILES = ("configuration_pvt.py", "modeling_pvt.py", "cpu_fast_paths.py", "image_processing_pvt.py")
CLASS_NAMES = ["sky", "road", "car"]


def make_mask_folder(root: Path, count: int = 8, size: tuple[int, int] = (40, 36), names=CLASS_NAMES) -> Path:
    """`root`/images/*.png and masks/*.png (vertical bands of class ids, each class in its own colour plus noise) and
    an id2label.json."""
    width, height = size
    colours = np.array([(40, 90, 200), (90, 90, 90), (200, 30, 30)], dtype=np.float64)
    for index in range(count):
        rng = np.random.default_rng(index)
        columns = np.sort(rng.integers(0, len(names), width))
        mask = np.repeat(columns[None, :], height, axis=0).astype(np.uint8)
        image = (colours[mask % len(colours)] + rng.normal(0, 20, (height, width, 3))).clip(0, 255).astype(np.uint8)
        for kind, picture in (("images", Image.fromarray(image)), ("masks", Image.fromarray(mask, mode="L"))):
            (root / kind).mkdir(parents=True, exist_ok=True)
            picture.save(root / kind / f"{index:03d}.png")
    (root / "id2label.json").write_text(json.dumps(dict(enumerate(names))))
    return root


CONVERT_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "convert_checkpoint.py"


def run_convert(capsys, *args) -> tuple[int, str, str]:
    """scripts/convert_checkpoint.py in this process, errors printed as a user sees them: (exit code, out, err)."""
    from modeling_pvt.cli import run_cli

    code = run_cli(runpy.run_path(str(CONVERT_SCRIPT))["main"], [str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(capsys) -> str:
    """The `error: …` line a CLI printed last on stderr (after any progress bars), asserting it is the only one and
    that no traceback came with it."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    assert sum(line.startswith("error: ") for line in err) == 1, err
    return err[-1]


def complete_checkpoints(output_dir: Path) -> list[int]:
    """Steps of the checkpoints in `output_dir` that Trainer finished writing (trainer_state.json comes last)."""
    return sorted(
        int(path.name.split("-")[1])
        for path in Path(output_dir).glob("checkpoint-*")
        if (path / "trainer_state.json").is_file()
    )


def kill_after_checkpoint(command: list[str], output_dir: Path, step: int, env: dict, hang_guard_s: int = 300) -> int:
    """Starts a training `command` and kills it with SIGKILL as soon as it has a complete checkpoint at `step` or
    later; returns the newest complete checkpoint's step."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + hang_guard_s
    while not complete_checkpoints(output_dir) or complete_checkpoints(output_dir)[-1] < step:
        assert process.poll() is None, "the run ended before it could be killed"
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run wrote no checkpoint at step {step} or later within {hang_guard_s} s (hung?)")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return complete_checkpoints(output_dir)[-1]


def make_hub_segmentation_dataset(root: Path) -> Path:
    """A local dataset folder that `load_dataset(<path>)` reads like a Hub dataset with scene_parse_150's columns
    (`image`, `annotation` with 0 = other, a `scene` class label): 6 train and 3 validation images, 48x40, and an
    id2label.json for the three classes left after label reduction."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    features = Features({"image": ImageFeature(), "annotation": ImageFeature(), "scene": ClassLabel(names=["a"])})
    for split, count in (("train", 6), ("validation", 3)):
        generators = [np.random.default_rng(index) for index in range(count)]
        data = {
            "image": [Image.fromarray(g.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for g in generators],
            "annotation": [
                Image.fromarray(np.random.default_rng(i).choice((0, 1, 2, 3), (40, 48)).astype(np.uint8), mode="L")
                for i in range(count)
            ],
            "scene": [0] * count,
        }
        Dataset.from_dict(data, features=features).to_parquet(str(root / "data" / f"{split}.parquet"))
    (root / "id2label.json").write_text(json.dumps({"0": "wall", "1": "floor", "2": "sky"}))
    return root


def resume_killed_run(command: list[str], killed_dir: Path, killed_at: int, environment: dict) -> tuple[str, dict]:
    """Runs `command` (a run killed after checkpoint `killed_at`, now with --resume_from_checkpoint last) to the end;
    returns its stdout and all_results.json, checking that it resumed from that checkpoint."""
    resumed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = read_json(killed_dir / "all_results.json")
    assert results["resumed_from"].endswith(f"checkpoint-{killed_at}")
    return resumed.stdout, results


# COCO category ids need not be contiguous: these become classes 0 and 1.
DETECTION_CATEGORIES = [{"id": 3, "name": "person"}, {"id": 7, "name": "car"}]


def make_coco_folder(root: Path, count: int = 8, size: tuple[int, int] = (64, 48)) -> Path:
    """`root`/images/*.png (noise with 1-2 filled rectangles: red for person, blue for car) and an annotations.json
    (COCO instances) with their boxes; every fourth image has no objects."""
    width, height = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng(index)
        pixels = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
        for number in range(0 if index % 4 == 3 else 1 + index % 2):
            w, h = int(rng.integers(8, width // 2)), int(rng.integers(8, height // 2))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            category = DETECTION_CATEGORIES[(index + number) % 2]
            pixels[y : y + h, x : x + w] = (230, 40, 40) if category["id"] == 3 else (40, 40, 230)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": index + 1, "category_id": category["id"],
                 "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
        Image.fromarray(pixels).save(root / "images" / f"{index:03d}.png")
        images.append({"id": index + 1, "file_name": f"{index:03d}.png", "width": width, "height": height})
    coco = {"images": images, "annotations": annotations, "categories": DETECTION_CATEGORIES}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def make_hub_detection_dataset(root: Path, counts: dict | None = None) -> Path:
    """A local dataset folder that `load_dataset(<path>)` reads like CPPE-5 on the Hub (`image_id`, `image`, `width`,
    `height`, `objects` with `id`, `area`, `bbox` [x, y, w, h] and a `category` ClassLabel): 6 train and 3 test
    images of 48x40 with one box each."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    objects = {
        "id": Value("int64"),
        "area": Value("int64"),
        "bbox": Sequence(Value("float32"), length=4),
        "category": ClassLabel(names=["coverall", "mask"]),
    }
    features = Features(
        {"image_id": Value("int64"), "image": ImageFeature(), "width": Value("int32"), "height": Value("int32"),
         "objects": Sequence(objects)}
    )  # fmt: skip
    for split, count in (counts or {"train": 6, "test": 3}).items():
        data = {"image_id": [], "image": [], "width": [], "height": [], "objects": []}
        for index in range(count):
            rng = np.random.default_rng(index)
            pixels = rng.integers(0, 60, (40, 48, 3)).astype(np.uint8)
            pixels[8:28, 10:30] = 220
            data["image_id"].append(index)
            data["image"].append(Image.fromarray(pixels))
            data["width"].append(48)
            data["height"].append(40)
            box = {"id": [index], "area": [400], "bbox": [[10.0, 8.0, 20.0, 20.0]], "category": [index % 2]}
            data["objects"].append(box)
        Dataset.from_dict(data, features=features).to_parquet(str(root / "data" / f"{split}.parquet"))
    return root
