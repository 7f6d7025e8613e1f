"""The demo's API over HTTP, as `gradio_client` (or any program) uses it against a running server: the same
predictions the page shows, for each task, bad uploads answered with a message while the server keeps serving, and
`scripts/demo.py` itself started as a user starts it."""

import re
import runpy
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from demo_helpers import (
    STUB_BOXES,
    TOP_CLASS,
    expected_stub_boxes,
    free_port,
    grayscale_png,
    not_an_image,
    photo,
    require_gradio,
    rgba_png,
    start_app,
    stub_detection_predictor,
    tiny_classifier_folder,
    tiny_detector_folder,
    tiny_segmentation_folder,
)
from PIL import Image

from modeling_pvt.demo.predict import Predictor, open_image

REPO = Path(__file__).resolve().parents[2]
require_gradio()
# Gradio's queue calls pandas options that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-http")


def _served(predictor, root):
    from gradio_client import Client

    app, url = start_app(predictor, root / "examples")
    return app, Client(url, verbose=False)


@pytest.fixture(scope="module")
def classifier(root):
    app, client = _served(Predictor.from_pretrained(str(tiny_classifier_folder(root / "classifier"))), root)
    yield client
    app.close()


@pytest.fixture(scope="module")
def segmenter(root):
    predictor = Predictor.from_pretrained(str(tiny_segmentation_folder(root / "segmenter")))
    app, client = _served(predictor, root)
    yield predictor, client
    app.close()


@pytest.fixture(scope="module")
def stub_detector(root):
    app, client = _served(stub_detection_predictor(), root)
    yield client
    app.close()


def _file(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_classification_top_5(classifier, root):
    top, status = classifier.predict(_file(photo(root)), api_name="/predict")
    assert top["label"] == TOP_CLASS and len(top["confidences"]) == 5
    assert top["confidences"][0]["label"] == TOP_CLASS
    assert re.search(r"\*\*china.png\*\*: top label pagoda \(\d+\.\d%\) · \*\*\d+ ms\*\* per image", status)


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(classifier, root):
    text = root / "notes.txt"
    text.write_text("not a picture")
    huge = root / "huge.png"
    Image.new("1", (8000, 7000)).save(huge)
    refused = {
        not_an_image(root): "Could not read holiday.png: it is not an image file.",
        text: "Could not read notes.txt: it is not an image file.",
        huge: "huge.png is 8000×7000 (56 megapixels); the demo takes at most 50 megapixels.",
    }
    for path, message in refused.items():
        top, status = classifier.predict(_file(path), api_name="/predict")
        assert status.startswith("⚠️ **Could not use this input.**") and message in status, status
        assert "Traceback" not in status and not top.get("confidences")
    converted = {rgba_png(root): "RGBA image: transparent parts shown on white", grayscale_png(root): "grayscale (L)"}
    for path, note in converted.items():
        top, status = classifier.predict(_file(path), api_name="/predict")
        assert top["label"] == TOP_CLASS and note in status
    top, _ = classifier.predict(_file(photo(root)), api_name="/predict")
    assert top["label"] == TOP_CLASS


def test_segmentation_overlay_and_legend(segmenter, root):
    predictor, client = segmenter
    picture = photo(root)
    image, _ = open_image(str(picture))
    mask = predictor.predict(image).mask
    present = {predictor.id2label[int(class_id)] for class_id in np.unique(mask)}

    shown, legend, status = client.predict(_file(picture), 0.5, api_name="/predict")
    assert set(re.findall(r'class="legend-name">([^<]+)<', legend)) == present
    assert f"{len(present)} classes present" in status
    assert Image.open(shown).size == image.size
    # Opacity 0 shows the picture itself.
    plain, _, _ = client.predict(_file(picture), 0.0, api_name="/predict")
    assert np.array_equal(np.asarray(Image.open(plain).convert("RGB")), np.asarray(image))


def _rows(table) -> list:
    return table["data"] if isinstance(table, dict) else table


def test_detection_boxes_table_and_threshold(stub_detector, root):
    for threshold in (0.5, 0.2, 0.95):
        drawn, table, status = stub_detector.predict(_file(photo(root)), threshold, api_name="/predict")
        rows = _rows(table)
        assert len(rows) == expected_stub_boxes(threshold), rows
        assert f"{len(rows)} boxes with score ≥ {threshold:.2f}" in status
    drawn, table, _ = stub_detector.predict(_file(photo(root)), 0.5, api_name="/predict")
    cat = _rows(table)[0]
    assert cat[:2] == ["cat", STUB_BOXES[0][0]] and [float(v) for v in cat[2:]] == [16.0, 21.4, 144.0, 149.8]
    assert Image.open(drawn).size == (320, 214)


def test_detection_with_a_real_tiny_detector(root):
    predictor = Predictor.from_pretrained(str(tiny_detector_folder(root / "detector")))
    image, _ = open_image(str(photo(root)))
    expected = [found for found in predictor.predict(image).detections if found.score >= 0.5]
    app, client = _served(predictor, root)
    try:
        _, table, status = client.predict(_file(photo(root)), 0.5, api_name="/predict")
    finally:
        app.close()
    assert [row[0] for row in _rows(table)] == [found.label for found in expected] and len(expected) >= 2, status


def test_the_script_serves_and_prints_its_url(root, monkeypatch, capsys):
    """scripts/demo.py's main as a user runs it, in this process: it would block until Ctrl-C, so the block is
    replaced by handing the running app to the test."""
    import gradio

    folder = tiny_classifier_folder(root / "script-classifier")
    port = free_port()
    started = []
    monkeypatch.setattr(gradio.Blocks, "block_thread", lambda app: started.append(app))
    demo_main = runpy.run_path(str(REPO / "scripts" / "demo.py"))["main"]
    assert demo_main(["--model", str(folder), "--port", str(port)]) == 0
    (app,) = started
    try:
        printed = capsys.readouterr().out.splitlines()
        assert printed == [
            f"Loading {folder} ...",
            f"Demo of {folder} (classification) running on http://127.0.0.1:{port}/",
            "Press Ctrl-C to stop.",
        ]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).status == 200

        from gradio_client import Client

        top, _ = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(_file(photo(root)), api_name="/predict")
        assert top["label"] == TOP_CLASS
    finally:
        app.close()
