"""The one model-card renderer, shared by checkpoint conversion, fine-tuning and publishing.

`render_model_card(model, ...)` returns the text of a Hub `README.md`: YAML metadata (license, library, tags,
pipeline tag, datasets, `model-index`) followed by the sections filled into `CARD_TEMPLATE`. Parameters and
multiply-adds are measured here, on a weightless copy of the model, so that every card states numbers our code
produced; the paper's numbers are quoted separately and labelled as the paper's.

`python -m modeling_pvt.checkpoints.model_card model_cards/` rewrites the committed template and the four preset cards.
"""

import argparse
import copy
import string
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from huggingface_hub import EvalResult, ModelCardData
from torch.utils.flop_counter import FlopCounterMode

from ..configuration_pvt import PRESETS
from ..data.digits import EMBEDDED_DATASETS

PAPER_URL = "https://arxiv.org/abs/2102.12122"
ORIGINAL_CODE_URL = "https://github.com/whai362/PVT"
# Table 2 of the paper (ImageNet-1k validation, 224x224 single crop). "GFLOPs" there are multiply-adds.
PAPER_RESULTS = {
    "pvt-tiny": {"top1": 75.1, "gflops": 1.9, "params_m": 13.2},
    "pvt-small": {"top1": 79.8, "gflops": 3.8, "params_m": 24.5},
    "pvt-medium": {"top1": 81.2, "gflops": 6.7, "params_m": 44.2},
    "pvt-large": {"top1": 81.7, "gflops": 9.8, "params_m": 61.4},
}
# The paper's Semantic FPN on ADE20K (its segmentation table: 150 classes, 512x512; "GFLOPs" are multiply-adds;
# single-scale mIoU %).
PAPER_SEGMENTATION = {
    "pvt-tiny": {"miou": 35.7, "gflops": 33.2, "params_m": 17.0},
    "pvt-small": {"miou": 39.8, "gflops": 44.5, "params_m": 28.2},
    "pvt-medium": {"miou": 41.6, "gflops": 61.0, "params_m": 48.0},
    "pvt-large": {"miou": 42.1, "gflops": 79.6, "params_m": 65.1},
}
# The paper's RetinaNet on COCO (its object-detection table: 1x schedule, val2017 box AP %, single scale 1333x800).
PAPER_DETECTION = {
    "pvt-tiny": {"ap": 36.7},
    "pvt-small": {"ap": 40.4},
    "pvt-medium": {"ap": 41.9},
    "pvt-large": {"ap": 42.6},
}
IMAGENET_NUM_LABELS = 1000
COCO_NUM_LABELS = 80
# (height, width): the paper's COCO test scale fits 1333x800; a 4:3 image becomes 800x1067.
DETECTION_RESOLUTION = (800, 1067)
ADE20K_NUM_LABELS = 150
MEASURED_RESOLUTION = 224
SEGMENTATION_RESOLUTION = 512
# Trainer's bookkeeping entries are not quality metrics and stay out of `model-index`.
_NOT_METRICS = ("loss", "runtime", "samples_per_second", "steps_per_second", "epoch")

CITATION = """@inproceedings{wang2021pyramid,
  title     = {Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without Convolutions},
  author    = {Wang, Wenhai and Xie, Enze and Li, Xiang and Fan, Deng-Ping and Song, Kaitao and Liang, Ding
               and Lu, Tong and Luo, Ping and Shao, Ling},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages     = {568--578},
  year      = {2021}
}"""

# What differs between the cards of the two tasks; the rest of the card is shared.
_CLASSIFICATION_USAGE = """from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

repo = "$repo_id"
image = Image.open("path/to/image.jpg")
classifier = pipeline("image-classification", model=repo, trust_remote_code=True)
print(classifier(image))

processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
model = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True)
inputs = processor(images=image, return_tensors="pt")
predicted = model(**inputs).logits.argmax(-1).item()
print(model.config.id2label[predicted])

# Feature pyramid for dense prediction: the four stages' NCHW maps at strides 4, 8, 16 and 32. AutoModel loads a
# Hub repo and a local folder alike; AutoBackbone works only with a Hub repo id while online (transformers
# $transformers_version asks the Hub before loading, so it fails for folders and offline).
encoder = AutoModel.from_pretrained(repo, trust_remote_code=True)
feature_maps = encoder(**inputs, output_hidden_states=True).hidden_states"""
_SEGMENTATION_USAGE = """from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

repo = "$repo_id"
image = Image.open("path/to/image.jpg").convert("RGB")
segmenter = pipeline("image-segmentation", model=repo, trust_remote_code=True)
for segment in segmenter(image):  # one mask (a PIL image at the input's size) per class present
    print(segment["label"])

processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
model = AutoModelForSemanticSegmentation.from_pretrained(repo, trust_remote_code=True)
inputs = processor(images=image, return_tensors="pt")  # keeps the aspect ratio; sides become multiples of 32
outputs = model(**inputs)  # outputs.logits: (1, num_labels, H/4, W/4)
class_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]  # (H, W)"""


@dataclass(frozen=True)
class _CardTask:
    pipeline_tag: str
    task_name: str
    tags: tuple[str, ...]
    what: str  # completes "…: " in the summary
    architecture_note: str
    intended_uses: str
    usage: str


CLASSIFICATION_CARD = _CardTask(
    pipeline_tag="image-classification",
    task_name="Image Classification",
    tags=("image-classification",),
    what="an image classifier and multi-scale backbone",
    architecture_note="A CLS token joins in the last stage; its normalised embedding feeds\nthe classification head.",
    intended_uses="- Image classification over the labels in `config.id2label` ($num_labels classes).\n"
    "- A multi-scale backbone (feature maps at strides 4/8/16/32) for detection and segmentation heads.\n"
    "- A starting point for fine-tuning on your own labels.",
    usage=_CLASSIFICATION_USAGE,
)
SEGMENTATION_CARD = _CardTask(
    pipeline_tag="image-segmentation",
    task_name="Semantic Segmentation",
    tags=("image-segmentation", "semantic-segmentation", "semantic-fpn"),
    what="a semantic segmentation model (PVT backbone + Semantic FPN)",
    architecture_note="This is the paper's segmentation model: the dense backbone (no CLS token, as in the\n"
    "original segmentation code) feeds a Semantic FPN (Kirillov et al., 2019), an FPN neck and a head that merges\n"
    "the four levels at stride 4, which predicts a class for every pixel at 1/4 of the input resolution.",
    intended_uses="- Semantic segmentation over the labels in `config.id2label` ($num_labels classes).\n"
    "- A starting point for fine-tuning on your own classes (`scripts/finetune_segmentation.py`).",
    usage=_SEGMENTATION_USAGE,
)


_DETECTION_USAGE = """from PIL import Image
from transformers import AutoImageProcessor, AutoModelForObjectDetection, pipeline

repo = "$repo_id"
image = Image.open("path/to/image.jpg").convert("RGB")
detector = pipeline("object-detection", model=repo, trust_remote_code=True)
for found in detector(image, threshold=0.3):  # label, score and box (xmin, ymin, xmax, ymax) in the image's pixels
    print(found["label"], round(found["score"], 2), found["box"])

processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
model = AutoModelForObjectDetection.from_pretrained(repo, trust_remote_code=True)
inputs = processor(images=image, return_tensors="pt")  # keeps the aspect ratio; pads to a multiple of 32 + pixel_mask
outputs = model(**inputs)  # per anchor: outputs.logits (sigmoid per class) and outputs.pred_boxes (x0, y0, x1, y1)
detections = processor.post_process_object_detection(outputs, threshold=0.3, target_sizes=[image.size[::-1]])[0]
print(detections["scores"], detections["labels"], detections["boxes"])  # boxes in the original image's pixels"""
DETECTION_CARD = _CardTask(
    pipeline_tag="object-detection",
    task_name="Object Detection",
    tags=("object-detection", "retinanet"),
    what="an object detector (PVT backbone + RetinaNet)",
    architecture_note="This is the paper's detection model: the dense backbone (no CLS token, as in the\n"
    "original detection code) feeds RetinaNet (Lin et al., 2017): an FPN over the stride-8/16/32 maps with two extra\n"
    "levels (P3-P7), and a head shared by the levels that scores every anchor per class (sigmoid, focal loss) and\n"
    "regresses its box; class-wise NMS keeps the best boxes.",
    intended_uses="- Object detection over the labels in `config.id2label` ($num_labels classes).\n"
    "- A starting point for fine-tuning on your own classes (`scripts/finetune_detection.py`).",
    usage=_DETECTION_USAGE,
)
_CARDS = {"PvtForSemanticSegmentation": SEGMENTATION_CARD, "PvtForObjectDetection": DETECTION_CARD}


def card_task(model) -> _CardTask:
    return _CARDS.get(type(model).__name__, CLASSIFICATION_CARD)


CARD_TEMPLATE = string.Template(
    """---
$metadata
---

# $title

$summary

## Model description

PVT v1 ("Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without Convolutions",
Wang et al., ICCV 2021, [arXiv:2102.12122]($paper_url)) is a convolution-free backbone that produces a
feature pyramid like a CNN. Each of its four stages starts with a strided patch embedding (a convolution with
kernel = stride) and adds learned position embeddings, then runs transformer blocks whose attention uses
*spatial-reduction attention*: keys and values come from the feature map shrunk by a ratio R, which keeps
attention affordable at high resolution. $architecture_note

| | stage 1 | stage 2 | stage 3 | stage 4 |
|---|---|---|---|---|
$stage_table

$measurements

$results

## Intended uses

$intended_uses

## How to use

The modelling code is stored with the weights, so loading needs `trust_remote_code=True` (or the
`pvt-transformers` package installed, which registers the classes with the Auto factories).

```python
$usage
```

## Limitations

- Position embeddings are stored for ${image_size}x${image_size} inputs; other sizes work (they are resized
  bilinearly) but accuracy is only known at the training resolution.
- ImageNet-trained models inherit the biases and the label set of ImageNet-1k; check them on your own data
  before relying on predictions.
- Numbers quoted from the paper were measured by its authors with the original weights and code; a card only
  reports numbers of this checkpoint where they are labelled as measured.

## Citation

```bibtex
$citation
```
"""
)


def infer_variant(config) -> str | None:
    """The preset name whose architecture `config` has (`"pvt-small"` …), or None for a custom architecture."""
    for name, fields in PRESETS.items():
        if all(list(getattr(config, field)) == list(value) for field, value in fields.items()):
            return name
    return None


def measure_model(model, resolution: int | tuple[int, int] = MEASURED_RESOLUTION) -> dict:
    """Parameters and multiply-adds of one forward pass at `resolution` (a side, or (height, width)), batch 1.

    Counted with `torch.utils.flop_counter.FlopCounterMode` on a weightless (meta-device) copy with eager
    attention, so the attention matmuls are counted and the user's model is neither run nor changed. That tool
    counts matmuls and convolutions (2 FLOPs per multiply-add); normalisations, activations and softmax are not
    counted, matching how the paper counts."""
    config = copy.deepcopy(model.config)
    with torch.device("meta"):
        twin = type(model)(config)
    twin.set_attn_implementation("eager")
    twin.eval()
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    pixel_values = torch.empty(1, config.num_channels, height, width, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        twin(pixel_values)
    flops = counter.get_total_flops()
    return {
        "params": sum(parameter.numel() for parameter in twin.parameters()),
        "gflops": flops / 1e9,
        "gmacs": flops / 2e9,
        "resolution": resolution,
    }


def _evaluation_metrics(eval_results: dict) -> dict:
    """`{"eval_accuracy": 0.9, "eval_loss": …}` -> `{"accuracy": 0.9}`: numeric quality metrics only."""
    metrics = {}
    for name, value in eval_results.items():
        short = name.removeprefix("eval_").removeprefix("test_")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and short not in _NOT_METRICS:
            metrics[short] = value
    return metrics


def _cites_paper_results(model, variant, eval_results, dataset_name) -> bool:
    """The paper's numbers describe a preset's 1000-way ImageNet classifier, 150-way ADE20K Semantic FPN or 80-way COCO
    RetinaNet, nothing else."""
    paper_labels = {SEGMENTATION_CARD: ADE20K_NUM_LABELS, DETECTION_CARD: COCO_NUM_LABELS}
    paper_labels = paper_labels.get(card_task(model), IMAGENET_NUM_LABELS)
    return not eval_results and variant in PAPER_RESULTS and model.config.num_labels == paper_labels and not dataset_name


def _eval_results_metadata(model, variant, eval_results, dataset_name) -> list[EvalResult]:
    task = card_task(model)
    if eval_results:
        dataset = dataset_name or "unknown"
        return [
            EvalResult(
                task_type=task.pipeline_tag,
                task_name=task.task_name,
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=name,
                metric_value=value,
                metric_name=name,
            )
            for name, value in _evaluation_metrics(eval_results).items()
        ]
    if not _cites_paper_results(model, variant, eval_results, dataset_name):
        return []
    if task is DETECTION_CARD:
        return [
            EvalResult(
                task_type=task.pipeline_tag,
                task_name=task.task_name,
                dataset_type="detection-datasets/coco",
                dataset_name="COCO 2017",
                dataset_split="validation",
                metric_type="map",
                metric_value=PAPER_DETECTION[variant]["ap"],
                metric_name="box AP (reported by the paper, RetinaNet 1x)",
                source_name="Wang et al., ICCV 2021 (paper's reported number)",
                source_url=PAPER_URL,
            )
        ]
    if task is SEGMENTATION_CARD:
        return [
            EvalResult(
                task_type=task.pipeline_tag,
                task_name=task.task_name,
                dataset_type="scene_parse_150",
                dataset_name="ADE20K",
                dataset_split="validation",
                metric_type="mean_iou",
                metric_value=PAPER_SEGMENTATION[variant]["miou"],
                metric_name="mIoU (reported by the paper, Semantic FPN)",
                source_name="Wang et al., ICCV 2021 (paper's reported number)",
                source_url=PAPER_URL,
            )
        ]
    return [
        EvalResult(
            task_type=task.pipeline_tag,
            task_name=task.task_name,
            dataset_type="imagenet-1k",
            dataset_name="ImageNet-1k",
            dataset_split="validation",
            metric_type="accuracy",
            metric_value=PAPER_RESULTS[variant]["top1"],
            metric_name="Top-1 accuracy (reported by the paper, Table 2)",
            source_name="Wang et al., ICCV 2021 (paper's reported number)",
            source_url=PAPER_URL,
        )
    ]


def _is_local_path(dataset_name: str) -> bool:
    """A folder on this machine rather than a Hub dataset id (which has at most one slash and is never absolute)."""
    return Path(dataset_name).is_absolute() or dataset_name.startswith(".") or dataset_name.count("/") > 1 or (
        Path(dataset_name).exists()
    )


def _shown_dataset_name(dataset_name: str | None) -> str | None:
    """Cards name a local folder by its own name only: a path on the trainer's machine means nothing elsewhere."""
    if dataset_name and _is_local_path(dataset_name):
        return f"local folder {Path(dataset_name).name}"
    return dataset_name


def _metadata(model, variant, eval_results, dataset_name, base_model, model_name) -> str:
    num_labels = model.config.num_labels
    if dataset_name and _is_local_path(dataset_name):
        # `datasets:` links Hub datasets; a local folder has no page there, and its path means nothing elsewhere.
        datasets, dataset_name = None, _shown_dataset_name(dataset_name)
    elif dataset_name in EMBEDDED_DATASETS:
        datasets = None  # built from scikit-learn's bundled digits by this package: no Hub page either
    else:
        paper_data = {
            IMAGENET_NUM_LABELS: ["imagenet-1k"],
            ADE20K_NUM_LABELS: ["scene_parse_150"],
            COCO_NUM_LABELS: ["detection-datasets/coco"],
        }
        datasets = [dataset_name] if dataset_name else paper_data.get(num_labels) if variant else None
    task = card_task(model)
    tags = ["vision", *task.tags, "pvt", "pyramid-vision-transformer", "custom_code"]
    if variant:
        tags.append(variant)
    data = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag=task.pipeline_tag,
        tags=tags,
        datasets=datasets,
        base_model=base_model,
        model_name=model_name,
        eval_results=_eval_results_metadata(model, variant, eval_results, dataset_name) or None,
    )
    return data.to_yaml()


def _stage_table(config) -> str:
    rows = [
        ("output stride", [config.stage_stride(i) for i in range(config.num_stages)]),
        ("hidden size", config.hidden_sizes),
        ("blocks", config.depths),
        ("attention heads", config.num_attention_heads),
        ("spatial-reduction ratio R", config.sr_ratios),
        ("MLP ratio", config.mlp_ratios),
    ]
    return "\n".join(f"| {label} | " + " | ".join(str(value) for value in values) + " |" for label, values in rows)


def _measurements_section(model, variant) -> str:
    is_segmentation = card_task(model) is SEGMENTATION_CARD
    resolution = {SEGMENTATION_CARD: SEGMENTATION_RESOLUTION, DETECTION_CARD: DETECTION_RESOLUTION}
    measured = measure_model(model, resolution.get(card_task(model), MEASURED_RESOLUTION))
    height, width = (measured["resolution"],) * 2 if isinstance(measured["resolution"], int) else measured["resolution"]
    lines = [
        "## Size and compute (measured by our code)",
        "",
        f"- Parameters: **{measured['params'] / 1e6:.2f} M** ({measured['params']:,}), counted from this model's "
        "tensors.",
        f"- Compute at {width}x{height}: **{measured['gmacs']:.2f} G multiply-adds** ({measured['gflops']:.2f} GFLOPs "
        "at 2 FLOPs per multiply-add), counted with `torch.utils.flop_counter.FlopCounterMode` over one forward "
        "pass with eager attention (matmuls and convolutions; normalisations, activations and softmax are not "
        "counted).",
    ]
    paper_table, head = (PAPER_SEGMENTATION, "Semantic FPN with a 150-class head at 512x512") if is_segmentation else (
        PAPER_RESULTS,
        "a 1000-class head",
    )
    if variant in paper_table and card_task(model) is not DETECTION_CARD:  # the paper gives no detector FLOPs here
        paper = paper_table[variant]
        lines.append(
            f'- For comparison, the paper reports {paper["params_m"]} M parameters and {paper["gflops"]} "GFLOPs" '
            f"(multiply-adds) for {variant} with {head}."
        )
    return "\n".join(lines)


def _format_value(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _paper_detection_sentence(variant: str) -> str:
    return (
        f"The paper reports **{PAPER_DETECTION[variant]['ap']} box AP** on COCO val2017 for {variant} + RetinaNet "
        "(its 256-channel, 4-conv head; 1x schedule, 12 epochs; single scale 1333x800). That number belongs to the "
        "authors' original weights; it was not re-measured on this checkpoint."
    )


def _results_section(model, variant, eval_results, dataset_name, training_args, from_scratch=False) -> str:
    if eval_results:
        lines = [
            "## Evaluation results (measured on this checkpoint)",
            "",
            f"Evaluated on `{dataset_name or 'unknown dataset'}` after fine-tuning:",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {name} | {_format_value(value)} |" for name, value in eval_results.items()),
        ]
    elif _cites_paper_results(model, variant, eval_results, dataset_name) and card_task(model) is DETECTION_CARD:
        lines = ["## COCO results (reported by the paper)", "", _paper_detection_sentence(variant)]
    elif _cites_paper_results(model, variant, eval_results, dataset_name) and card_task(model) is SEGMENTATION_CARD:
        lines = [
            "## ADE20K results (reported by the paper)",
            "",
            f"The paper reports **{PAPER_SEGMENTATION[variant]['miou']} mIoU** on the ADE20K validation set for "
            f"{variant} + Semantic FPN (single scale, short side 512). That number belongs to the authors' original "
            "weights; it was not re-measured on this checkpoint.",
        ]
    elif _cites_paper_results(model, variant, eval_results, dataset_name):
        lines = [
            "## ImageNet-1k results (reported by the paper)",
            "",
            f"The paper reports **{PAPER_RESULTS[variant]['top1']}% top-1** on the ImageNet-1k validation set "
            f"(224x224, single crop) for {variant} (Wang et al., 2021, Table 2). That number belongs to the "
            "authors' original weights; it was not re-measured on this checkpoint.",
        ]
    else:
        lines = ["## Evaluation results", "", "No evaluation results are recorded for this checkpoint."]
    if eval_results and card_task(model) is DETECTION_CARD and variant in PAPER_DETECTION:
        sentence = _paper_detection_sentence(variant)
        lines += ["", f"For scale only (COCO is not this checkpoint's data): {sentence[0].lower()}{sentence[1:]}"]
    if training_args:
        lines += [
            "",
            "## Training procedure",
            "",
            f"{'Trained from scratch' if from_scratch else 'Fine-tuned'} on `{dataset_name or 'unknown dataset'}` with "
            "these hyper-parameters:",
            "",
            "| hyper-parameter | value |",
            "|---|---|",
            *(f"| {name} | {_format_value(value)} |" for name, value in training_args.items()),
        ]
    return "\n".join(lines)


def _summary(model, variant, dataset_name, base_model, converted_from, from_scratch=False) -> str:
    name = f"PVT-{variant.removeprefix('pvt-').capitalize()}" if variant else "A custom-size PVT v1"
    parts = [
        f"{name} ({type(model).__name__}, {model.config.num_labels} labels): {card_task(model).what}, packaged for "
        "🤗 Transformers."
    ]
    if base_model:
        parts.append(f"Fine-tuned from [`{base_model}`](https://huggingface.co/{base_model}) on `{dataset_name}`.")
    elif dataset_name:
        parts.append(f"Trained {'from scratch ' if from_scratch else ''}on `{dataset_name}`.")
    if converted_from:
        parts.append(f"Converted from {converted_from}.")
    return " ".join(parts)


def render_model_card(
    model,
    *,
    variant: str | None = None,
    eval_results: dict | None = None,
    dataset_name: str | None = None,
    training_args: dict | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    converted_from: str | None = None,
    from_scratch: bool = False,
) -> str:
    """README.md text for `model` (any PVT model class of this package).

    Args:
        variant: preset name (`"pvt-tiny"` …); inferred from the architecture when omitted.
        eval_results: metrics measured on this checkpoint, e.g. `trainer.evaluate()`'s dict; they go into
            `model-index` and replace the paper's numbers.
        dataset_name: the dataset the checkpoint was fine-tuned / evaluated on (Hub dataset id).
        training_args: hyper-parameters to list (name -> value).
        base_model: Hub id of the checkpoint this one was fine-tuned from.
        repo_id: where the card will live; used in the loading snippet.
        converted_from: provenance of converted weights, e.g. "the original PVT release (`pvt_tiny.pth`)".
        from_scratch: the weights were trained from a random initialisation on `dataset_name` (no base model).
    """
    variant = variant or infer_variant(model.config)
    if variant is not None and variant not in PRESETS:
        raise ValueError(f"Unknown PVT variant {variant!r} for the model card. Known variants: {', '.join(PRESETS)}.")
    model_name = repo_id.split("/")[-1] if repo_id else (variant or "pvt-v1")
    metadata = _metadata(model, variant, eval_results, dataset_name, base_model, model_name)
    dataset_name = _shown_dataset_name(dataset_name)
    task = card_task(model)
    repo = repo_id or "path/to/this/folder-or-repo"
    return CARD_TEMPLATE.substitute(
        metadata=metadata,
        title=model_name,
        summary=_summary(model, variant, dataset_name, base_model, converted_from, from_scratch),
        paper_url=PAPER_URL,
        stage_table=_stage_table(model.config),
        measurements=_measurements_section(model, variant),
        results=_results_section(model, variant, eval_results, dataset_name, training_args, from_scratch),
        architecture_note=task.architecture_note,
        intended_uses=string.Template(task.intended_uses).substitute(num_labels=model.config.num_labels),
        usage=string.Template(task.usage).substitute(repo_id=repo, transformers_version=transformers.__version__),
        image_size=model.config.image_height_width[0],
        citation=CITATION,
    )


def preset_card(variant: str) -> str:
    """The card of an ImageNet-1k classifier of preset `variant`, as committed under `model_cards/`."""
    from ..configuration_pvt import PvtConfig
    from ..modeling_pvt import PvtForImageClassification

    with torch.device("meta"):
        model = PvtForImageClassification(PvtConfig.from_preset(variant, num_labels=IMAGENET_NUM_LABELS))
    return render_model_card(model, variant=variant, repo_id=f"your-org/{variant}-224")


def write_model_cards(directory: Path) -> list[Path]:
    """Writes `TEMPLATE.md` and one `<variant>.md` per preset into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "TEMPLATE.md"]
    written[0].write_text(CARD_TEMPLATE.template, encoding="utf-8")
    for variant in PRESETS:
        path = directory / f"{variant}.md"
        path.write_text(preset_card(variant), encoding="utf-8")
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description="Rewrite the card template and the per-preset model cards.")
    parser.add_argument("directory", type=Path, help="where to write them (the repository's model_cards/)")
    for path in write_model_cards(parser.parse_args(argv).directory):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
