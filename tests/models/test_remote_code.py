"""A saved folder is Hub remote code: it loads with the Auto classes and `pipeline` in a fresh process where this
package cannot be imported, from a local folder and from a repo id served by the Hugging Face cache (offline)."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_config
from helpers import (
    REMOTE_CODE_FILES,
    lay_out_as_hub_cache,
    read_json,
    run_without_package,
)
from PIL import Image
from sklearn.datasets import load_sample_image

from modeling_pvt import (
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    PvtImageProcessor,
    PvtV1ImageProcessor,
)

LABELS = {0: "temple", 1: "flower", 2: "sky", 3: "tree", 4: "water"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "pvt-small"
    model = PvtForImageClassification(tiny_config(id2label=LABELS, label2id={v: k for k, v in LABELS.items()}))
    model.eval().save_pretrained(folder)
    processor = PvtImageProcessor(size={"height": 96, "width": 96})
    processor.save_pretrained(folder)
    pixel_values = processor(load_sample_image("china.jpg"), return_tensors="pt").pixel_values
    with torch.inference_mode():
        logits = model(pixel_values).logits[0].tolist()
    return folder, logits


def test_folder_contents(saved):
    folder, _ = saved
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    assert set(REMOTE_CODE_FILES) <= names
    config = read_json(folder / "config.json")
    assert config["model_type"] == "pvt_v1"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_pvt.PvtConfig",
        "AutoModel": "modeling_pvt.PvtModel",
        "AutoModelForImageClassification": "modeling_pvt.PvtForImageClassification",
        "AutoBackbone": "modeling_pvt.PvtBackbone",
        "AutoModelForSemanticSegmentation": "modeling_pvt.PvtForSemanticSegmentation",
    }
    assert read_json(folder / "preprocessor_config.json")["auto_map"] == {
        "AutoImageProcessor": "image_processing_pvt.PvtV1ImageProcessor"
    }
    # Remote code may only import torch, transformers, the standard library and its sibling files.
    for code_file in REMOTE_CODE_FILES:
        imports = [
            line.split()[1]
            for line in (folder / code_file).read_text().splitlines()
            if line.startswith(("import ", "from "))
        ]
        roots = {name.split(".")[0] for name in imports}
        third_party = roots - set(sys.stdlib_module_names) - {"", "__future__"}
        assert third_party <= {"torch", "transformers", "numpy", "PIL"}, (code_file, third_party)


FRESH_PROCESS_CHECKS = """
import json, sys
import torch
from sklearn.datasets import load_sample_image
from transformers import (AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel,
                          AutoModelForImageClassification, pipeline)
from PIL import Image

repo = sys.argv[1] if len(sys.argv) > 1 else REPO
photo = Image.fromarray(load_sample_image("china.jpg"))
report = {}
config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
report["config"] = [type(config).__name__, type(config).__module__.startswith("transformers_modules")]
base = AutoModel.from_pretrained(repo, trust_remote_code=True)
classifier = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
report["classes"] = [type(base).__name__, type(classifier).__name__, type(processor).__name__]
with torch.inference_mode():
    report["logits"] = classifier(**processor(photo, return_tensors="pt")).logits[0].tolist()
    maps = base(torch.randn(1, 3, 64, 96), output_hidden_states=True).hidden_states
report["map_shapes"] = [list(m.shape) for m in maps]
classify = pipeline("image-classification", model=repo, trust_remote_code=True)
report["pipeline"] = classify(photo, top_k=3)
"""


def check_report(report, logits):
    assert report["config"] == ["PvtConfig", True]
    assert report["classes"] == ["PvtModel", "PvtForImageClassification", "PvtV1ImageProcessor"]
    np.testing.assert_allclose(report["logits"], logits, atol=1e-5)
    assert report["map_shapes"] == [[1, 8, 16, 24], [1, 16, 8, 12], [1, 32, 4, 6], [1, 64, 2, 3]]
    top = [prediction["label"] for prediction in report["pipeline"]]
    expected = [LABELS[i] for i in np.argsort(logits)[::-1][:3]]
    assert top == expected
    assert sum(prediction["score"] for prediction in report["pipeline"]) <= 1.0 + 1e-6


def test_auto_classes_and_pipeline_from_a_local_folder(saved, tmp_path):
    folder, logits = saved
    code = FRESH_PROCESS_CHECKS.replace("REPO", repr(str(folder))) + "print(json.dumps(report))"
    report = json.loads(run_without_package(code, tmp_path).strip().splitlines()[-1])
    check_report(report, logits)


def test_the_users_literal_call_with_a_repo_id(saved, tmp_path):
    """`AutoModel.from_pretrained("org/pvt-small", trust_remote_code=True)`, resolved from the HF cache offline."""
    folder, logits = saved
    env = lay_out_as_hub_cache(folder, tmp_path / "hf_home", "org/pvt-small")
    code = FRESH_PROCESS_CHECKS.replace("REPO", repr("org/pvt-small")) + (
        "import huggingface_hub\n"
        "# transformers 5.24-5.25's AutoBackbone first asks the Hub whether the repo exists; answer as the Hub would.\n"
        "huggingface_hub.HfApi.repo_exists = lambda self, repo_id, **kwargs: repo_id == 'org/pvt-small'\n"
        "backbone = AutoBackbone.from_pretrained('org/pvt-small', trust_remote_code=True, out_indices=[0, 3])\n"
        "report['backbone'] = [type(backbone).__name__, backbone.channels,\n"
        "    [list(f.shape) for f in backbone(torch.randn(2, 3, 64, 64)).feature_maps]]\n"
        "print(json.dumps(report))"
    )
    report = json.loads(run_without_package(code, tmp_path, env).strip().splitlines()[-1])
    check_report(report, logits)
    assert report["backbone"] == ["PvtBackbone", [8, 64], [[2, 8, 16, 16], [2, 64, 2, 2]]]


def test_installed_package_loads_folders_without_remote_code(saved):
    """With the package imported, the Auto classes resolve our model type directly."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    folder, _ = saved
    assert type(AutoConfig.from_pretrained(folder)).__module__ == "modeling_pvt.configuration_pvt"
    assert type(AutoModel.from_pretrained(folder)).__name__ == "PvtModel"
    assert type(AutoModelForImageClassification.from_pretrained(folder)).__module__ == "modeling_pvt.modeling_pvt"


SEGMENTATION_LABELS = {0: "sky", 1: "roof", 2: "tree", 3: "wall"}


@pytest.fixture(scope="module")
def saved_segmenter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "pvt-fpn"
    config = tiny_config(
        fpn_hidden_size=16,
        decoder_hidden_size=8,
        num_labels=len(SEGMENTATION_LABELS),
        id2label=SEGMENTATION_LABELS,
        label2id={v: k for k, v in SEGMENTATION_LABELS.items()},
    )
    model = PvtForSemanticSegmentation(config).eval()
    with torch.no_grad():  # a head that prefers different classes in different places, so that several are present
        model.decode_head.classifier.weight.normal_(std=1.0)
    model.save_pretrained(folder)
    processor = PvtImageProcessor.for_segmentation(short_side=96)
    processor.save_pretrained(folder)
    photo = load_sample_image("china.jpg")
    with torch.inference_mode():
        logits = model(**processor(photo, return_tensors="pt")).logits
    class_map = processor.post_process_semantic_segmentation(
        type("Outputs", (), {"logits": logits}), target_sizes=[photo.shape[:2]]
    )[0]
    return folder, sorted(SEGMENTATION_LABELS[int(i)] for i in class_map.unique())


def test_segmentation_folder_loads_and_segments_through_the_pipeline_in_a_fresh_process(saved_segmenter, tmp_path):
    folder, present = saved_segmenter
    assert len(present) >= 2
    assert read_json(folder / "config.json")["auto_map"]["AutoModelForSemanticSegmentation"] == (
        "modeling_pvt.PvtForSemanticSegmentation"
    )
    code = f"""
        import json
        from PIL import Image
        from sklearn.datasets import load_sample_image
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline
        folder = {str(folder)!r}
        model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        segment = pipeline("image-segmentation", model=folder, trust_remote_code=True)
        photo = Image.fromarray(load_sample_image("china.jpg"))
        results = segment(photo)
        print(json.dumps({{
            "model": [type(model).__name__, type(model).__module__.split(".")[0]],
            "processor": [type(processor).__name__, type(processor).__module__.split(".")[0]],
            "labels": sorted(r["label"] for r in results),
            "mask_sizes": sorted({{r["mask"].size for r in results}}),
            "photo_size": photo.size,
        }}))
        """
    report = json.loads(run_without_package(code, tmp_path).strip().splitlines()[-1])
    assert report["model"] == ["PvtForSemanticSegmentation", "transformers_modules"]
    assert report["processor"] == ["PvtV1ImageProcessor", "transformers_modules"]
    assert report["labels"] == present  # one mask per class present in the post-processed map
    assert report["mask_sizes"] == [report["photo_size"]] == [[640, 427]]


def test_auto_image_processor_gives_our_class_installed_and_the_remote_one_in_a_fresh_process(saved, tmp_path):
    """With the package imported AutoImageProcessor resolves our class (not transformers' native PVT processor); in
    a fresh process the remote one, which keeps 16-bit grayscale contrast as ours does."""
    from transformers import AutoImageProcessor

    folder, _ = saved
    processor = AutoImageProcessor.from_pretrained(folder)
    assert type(processor) is PvtV1ImageProcessor
    gray = np.asarray(Image.fromarray(load_sample_image("china.jpg")).convert("L"))
    wide = Image.fromarray(gray.astype(np.uint16) * 257)
    expected = processor(wide, return_tensors="pt").pixel_values
    torch.testing.assert_close(expected, processor(Image.fromarray(gray), return_tensors="pt").pixel_values)
    assert expected.std() > 0.5  # not the white image that PIL's own 16-bit -> RGB conversion gives
    torch.save(expected, tmp_path / "expected.pt")
    wide.save(tmp_path / "wide.png")

    code = f"""
        import numpy as np, torch
        from PIL import Image
        from transformers import AutoImageProcessor
        processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        image = Image.open("wide.png")
        assert image.mode.startswith("I"), image.mode
        pixel_values = processor(image, return_tensors="pt").pixel_values
        torch.testing.assert_close(pixel_values, torch.load("expected.pt"))
        print(type(processor).__name__, type(processor).__module__.split(".")[0])
        """
    assert run_without_package(code, tmp_path).split() == ["PvtV1ImageProcessor", "transformers_modules"]
