"""The demo's model side without Gradio or a server: the task from a config, uploads read into RGB images or a
readable refusal, one prediction per task, what the page draws, and the command line's errors."""

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from demo_helpers import (
    CHROMIUM_INSTALL,
    CLASS_NAMES,
    SEGMENTATION_NAMES,
    STUB_BOXES,
    TOP_CLASS,
    grayscale_png,
    not_an_image,
    photo,
    require,
    rgba_png,
    stub_detection_predictor,
    tiny_classifier_folder,
    tiny_segmentation_folder,
)
from PIL import Image

from modeling_pvt.cli import run_cli
from modeling_pvt.demo import predict as predict_module
from modeling_pvt.demo.predict import (
    CREATE_DEFAULT_MODEL,
    DEFAULT_MODEL,
    DISPLAY_LONG_SIDE,
    BadImage,
    Predictor,
    check_model_source,
    open_image,
    read_config,
    task_of,
)
from modeling_pvt.demo.render import (
    draw_detections,
    legend_html,
    legend_rows,
    overlay,
    palette,
    table_rows,
)

REPO = Path(__file__).resolve().parents[2]
demo_main = runpy.run_path(str(REPO / "scripts" / "demo.py"))["main"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-models")
    return {
        "classification": tiny_classifier_folder(root / "classifier"),
        "segmentation": tiny_segmentation_folder(root / "segmenter"),
        "pictures": root,
    }


# --------------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "architecture, task",
    [
        ("PvtForImageClassification", "classification"),
        ("PvtForSemanticSegmentation", "segmentation"),
        ("PvtForObjectDetection", "detection"),
    ],
)
def test_task_comes_from_the_configs_architecture(architecture, task):
    assert task_of({"architectures": [architecture]}) == (task, architecture)


@pytest.mark.parametrize("architectures", [["PvtBackbone"], ["PvtModel"], [], None])
def test_a_checkpoint_without_a_task_head_is_refused_with_what_to_do(architectures):
    with pytest.raises(ValueError, match="task head.*PvtForImageClassification.*Fine-tune one first"):
        task_of({"architectures": architectures}, "org/backbone")


def test_model_source_default_missing_names_the_command_that_creates_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"no model at {DEFAULT_MODEL}.*`{CREATE_DEFAULT_MODEL}`"):
        check_model_source(None)
    (tmp_path / DEFAULT_MODEL).mkdir(parents=True)
    (tmp_path / DEFAULT_MODEL / "config.json").write_text("{}")
    assert check_model_source(None) == DEFAULT_MODEL


def test_model_source_checks(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(ValueError, match="has no config.json"):
        check_model_source(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="is a file"):
        check_model_source(str(tmp_path / "weights.bin"))
    with pytest.raises(ValueError, match="no model folder at .*not a Hub repo id"):
        check_model_source(str(tmp_path / "no" / "such" / "model"))
    assert check_model_source("my-org/pvt-tiny") == "my-org/pvt-tiny"
    with pytest.raises(ValueError, match="cannot read the config of the Hub model my-org/not-cached: "):
        read_config("my-org/not-cached")  # offline here (conftest), as for a repo that does not exist


def test_command_line_errors_are_one_line_each(tmp_path, monkeypatch, capsys, folders):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "backbone").mkdir()
    (tmp_path / "backbone" / "config.json").write_text('{"architectures": ["PvtBackbone"]}')
    cases = [
        ([], f"`{CREATE_DEFAULT_MODEL}`"),
        (["--model", "outputs/nothing/here"], "no model folder at outputs/nothing/here"),
        (["--model", "backbone"], "PvtBackbone checkpoint"),
        (["--model", str(folders["classification"]), "--port", "70000"], "--port 70000 is not a port number"),
        (["--modle", "x"], "unrecognized arguments"),
    ]
    for argv, expected in cases:
        assert run_cli(demo_main, argv) != 0
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (argv, lines)


def test_the_script_reports_a_missing_model_before_importing_torch(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / "scripts" / "demo.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 1 and len(said) == 1 and f"`{CREATE_DEFAULT_MODEL}`" in said[0], result.stderr[-2000:]
    assert not {"torch", "gradio", "transformers", "modeling_pvt"} & set(imported)


def test_only_the_page_module_imports_gradio():
    """Gradio is an optional extra: no module of the package but demo/app.py imports it, and the package does not
    import that one."""
    import ast

    package = REPO / "modeling_pvt"
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" if node.module else alias.name for alias in node.names]
                names = [("." * node.level) + name for name in names]
            if any(name.split(".")[0] in ("gradio", "gradio_client") for name in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"demo/app.py"}
    assert "demo" not in (package / "__init__.py").read_text()


def test_a_missing_browser_skips_with_the_install_command_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        require(False, "Chromium or its driver", CHROMIUM_INSTALL)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set, so this is a failure"):
        require(False, "Chromium or its driver", CHROMIUM_INSTALL)
    require(True, "Chromium or its driver", CHROMIUM_INSTALL)


# -------------------------------------------------------------------------------------------------------- uploads


def test_rgba_and_grayscale_become_rgb_with_a_note(tmp_path):
    image, notes = open_image(str(rgba_png(tmp_path)))
    assert image.mode == "RGB" and image.size == (64, 48)
    assert image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((63, 0)) == (200, 0, 0)  # on white
    assert notes == ["RGBA image: transparent parts shown on white"]
    image, notes = open_image(str(grayscale_png(tmp_path)))
    assert image.mode == "RGB" and image.getpixel((10, 3)) == (40, 40, 40)
    assert notes == ["grayscale (L) image: used as RGB with three equal channels"]
    sixteen = tmp_path / "depth.png"
    Image.fromarray(np.full((8, 8), 60000, np.uint16)).save(sixteen)
    image, notes = open_image(str(sixteen))
    assert image.getpixel((0, 0))[0] > 200 and "scaled to 8 bits" in notes[0]


def test_unreadable_and_oversized_uploads_are_refused_with_a_readable_message(tmp_path):
    with pytest.raises(BadImage, match=r"Could not read holiday.png: it is not an image file\. Upload a PNG"):
        open_image(str(not_an_image(tmp_path)))
    truncated = tmp_path / "cut.png"
    photo(tmp_path).rename(truncated)
    truncated.write_bytes(truncated.read_bytes()[:3000])
    with pytest.raises(BadImage, match="Could not read cut.png: .*Upload a PNG"):
        open_image(str(truncated))
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 7000)).save(huge)  # 56 megapixels, a few KB on disk
    with pytest.raises(BadImage, match=r"huge.png is 8000×7000 \(56 megapixels\); the demo takes at most 50"):
        open_image(str(huge))
    with pytest.raises(BadImage, match="No image yet"):
        open_image(None)


def test_large_images_are_shown_and_predicted_at_display_size(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (3000, 1500), (10, 20, 30)).save(path)
    image, notes = open_image(str(path))
    assert image.size == (DISPLAY_LONG_SIDE, DISPLAY_LONG_SIDE // 2)
    assert image.info["uploaded_size"] == (3000, 1500)
    assert notes == [f"shown and predicted at {DISPLAY_LONG_SIDE}×{DISPLAY_LONG_SIDE // 2} (uploaded 3000×1500)"]


# ---------------------------------------------------------------------------------------------------- predictions


def test_classification_gives_the_top_5_labels_best_first(folders):
    predictor = Predictor.from_pretrained(str(folders["classification"]))
    assert predictor.task == "classification" and predictor.id2label[0] == CLASS_NAMES[0]
    image, _ = open_image(str(photo(folders["pictures"])))
    prediction = predictor.predict(image)
    labels, probabilities = list(prediction.top5), list(prediction.top5.values())
    assert len(labels) == 5 and labels[0] == TOP_CLASS and set(labels) <= set(CLASS_NAMES)
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    assert prediction.seconds > 0


def test_segmentation_mask_legend_and_overlay(folders, monkeypatch):
    predictor = Predictor.from_pretrained(str(folders["segmentation"]))
    image, _ = open_image(str(photo(folders["pictures"])))
    mask = predictor.predict(image).mask
    assert mask.shape == (image.height, image.width)
    colours = palette(len(SEGMENTATION_NAMES))
    rows = legend_rows(mask, predictor.id2label, colours)
    present = {SEGMENTATION_NAMES[i] for i in np.unique(mask)}
    assert {name for name, _, _ in rows} == present and len(present) >= 2
    assert abs(sum(share for _, _, share in rows) - 1) < 1e-9
    assert [share for _, _, share in rows] == sorted((share for _, _, share in rows), reverse=True)
    assert all(f">{name}<" in legend_html(rows) for name in present)

    assert np.array_equal(np.asarray(overlay(image, mask, colours, 0.0)), np.asarray(image))
    # Many classes on a large picture: the class map is computed smaller and enlarged, still at the picture's size.
    monkeypatch.setattr(predict_module, "MAX_UPSAMPLED_LOGITS", mask.size)
    small = predictor.predict(image).mask
    assert small.shape == mask.shape and (small == mask).mean() > 0.9
    full = np.asarray(overlay(image, mask, colours, 1.0, transparent=[0]))
    tinted = mask != 0
    assert np.array_equal(full[tinted], colours[mask[tinted]])


def test_detection_keeps_every_box_and_the_page_filters_by_threshold(tmp_path):
    predictor = stub_detection_predictor()
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    detections = predictor.predict(image).detections
    assert [found.score for found in detections] == pytest.approx([score for score, _, _ in STUB_BOXES])
    assert detections[0].label == "cat" and detections[0].box == pytest.approx((10, 10, 90, 70))
    rows = table_rows([found for found in detections if found.score >= 0.5], scale=2.0)
    assert rows == [["cat", 0.92, 20.0, 20.0, 180.0, 140.0], ["dog", 0.71, 200.0, 40.0, 380.0, 180.0]]
    drawn = np.asarray(draw_detections(image, detections, palette(2)))
    assert tuple(drawn[40, 10]) == tuple(palette(2)[0])  # the cat box's left edge in class 0's colour


def test_a_real_tiny_detector_saved_to_a_folder(tmp_path):
    from demo_helpers import tiny_detector_folder

    predictor = Predictor.from_pretrained(str(tiny_detector_folder(tmp_path / "detector")))
    assert predictor.task == "detection"
    image, _ = open_image(str(photo(tmp_path)))
    detections = predictor.predict(image).detections
    for found in detections:
        x0, y0, x1, y1 = found.box
        assert 0 <= found.score <= 1 and found.label in predictor.id2label.values()
        assert -1 <= x0 <= x1 <= image.width + 1 and -1 <= y0 <= y1 <= image.height + 1
