"""The demo page: a Gradio Blocks app for one checkpoint, its interface chosen by the checkpoint's task.

    from modeling_pvt.demo.app import build_app
    build_app(Predictor.from_pretrained("outputs/pvt-tiny-sklearn-digits/model")).launch()

or `python scripts/demo.py --model FOLDER_OR_REPO_ID`. Needs the `demo` extra (`pip install -e ".[demo]"`).

Every event handler turns a bad upload (not an image, too large, unreadable) and any failure into a message in the
page's status line; nothing reaches the browser as a traceback, and the server keeps serving. The prediction is
exposed as the API endpoint `/predict` (gradio_client: `Client(url).predict(handle_file(path), ..., api_name=
"/predict")`)."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import gradio as gr  # noqa: E402

from .predict import (  # noqa: E402
    MAX_PIXELS,
    TASK_TITLES,
    TOP_K,
    BadImage,
    Prediction,
    Predictor,
    open_image,
    unreadable,
)
from .render import (  # noqa: E402
    TABLE_HEADERS,
    draw_detections,
    example_images,
    legend_html,
    legend_rows,
    overlay,
    palette,
    table_rows,
    transparent_ids,
)

MAX_FILE_SIZE = "50mb"
DEFAULT_OPACITY = 0.5
DEFAULT_THRESHOLD = 0.5


def uploaded_image(**kwargs) -> gr.Image:
    """A gr.Image whose unreadable uploads (not an image, a decompression bomb) reach the handler as a BadImage with
    a message for the page, instead of failing in Gradio's preprocessing with no message. The instance's
    `preprocess` is wrapped, not subclassed: Gradio writes a .pyi stub beside any module defining a component."""
    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def readable_preprocess(payload):
        try:
            return preprocess(payload)
        except Exception as error:
            name = Path(getattr(payload, "orig_name", None) or getattr(payload, "path", None) or "the file").name
            return unreadable(name, error)

    image.preprocess = readable_preprocess
    return image


def _status_ok(name: str, prediction: Prediction, notes: list[str], summary: str) -> str:
    milliseconds = prediction.seconds * 1000
    line = f"**{name}**: {summary} · **{milliseconds:.0f} ms** per image (preprocessing, model, post-processing)"
    return line + "".join(f"\n- {note}" for note in notes)


def _status_error(message: str) -> str:
    return f"⚠️ **Could not use this input.** {message}"


def _failure(error: Exception) -> str:
    """Any other error: one line on the page, the traceback in the server's log."""
    traceback.print_exc(file=sys.stderr)
    return _status_error(f"The prediction failed ({type(error).__name__}: {' '.join(str(error).split())}).")


def fast_path_line(model=None) -> str:
    """The CPU and the inference fast path `model` runs on. Not `describe_cpu_fast_paths()`: on some CPUs that times
    the training kernels first, which a page that only predicts has no use for."""
    import torch

    from ..cpu_fast_paths import (
        ONEDNN,
        cpu_inference_linear_backend,
        detect_cpu_capabilities,
    )

    linear = "oneDNN, bias and GELU fused" if cpu_inference_linear_backend() == ONEDNN else "ATen"
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return (
        f"CPU: {detect_cpu_capabilities().summary()}, {torch.get_num_threads()} threads · fast path: fp32, linear "
        f"layers on {linear}" + (f", {attention} attention" if attention else "")
    )


def _header(predictor: Predictor) -> str:
    classes = len(predictor.id2label)
    return (
        f"# PVT demo: {TASK_TITLES[predictor.task]}\n"
        f"**Model** `{predictor.name}` · **task** {predictor.task} · {classes} classes · "
        f"{predictor.num_parameters / 1e6:.1f} M parameters\n\n"
        f"<small>{fast_path_line(predictor.model)}</small>"
    )


def build_app(predictor: Predictor, max_pixels: int = MAX_PIXELS, examples_folder: str | Path | None = None):
    """The Blocks page for `predictor`'s task: image in, the task's outputs and a status line out."""
    colours = palette(max(len(predictor.id2label), max(predictor.id2label, default=0) + 1, 1))
    examples = example_images(examples_folder)
    with gr.Blocks(title=f"PVT demo: {predictor.name}", analytics_enabled=False) as app:
        gr.Markdown(_header(predictor), elem_id="header")
        with gr.Row():
            with gr.Column():
                # image_mode=None: the file reaches open_image as uploaded, which converts it and says how.
                image = uploaded_image(
                    type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                    elem_id="input-image",
                )
                submit = gr.Button("Submit", variant="primary", elem_id="submit")
            with gr.Column():
                outputs, extra_inputs, rerender = _task_outputs(predictor, colours)
        status = gr.Markdown("Upload an image or pick an example, then press Submit.", elem_id="status")
        gr.Examples(
            [[path] for path in examples], inputs=[image], label="Examples (shipped with scikit-learn)",
            elem_id="examples",
        )

        def predict(value, *settings):
            try:
                picture, notes = open_image(value, max_pixels)
                name = Path(str(value)).name if isinstance(value, str) else "the image"
                prediction = predictor.predict(picture)
                shown, summary = _show(predictor, colours, picture, prediction, *settings)
                state = (picture, prediction, notes, name)
                return (*shown, state, _status_ok(name, prediction, notes, summary))
            except BadImage as error:
                message = _status_error(str(error))
            except Exception as error:  # the page says what happened; the server goes on serving
                message = _failure(error)
            return (*_empty(predictor), None, message)

        state = gr.State(None)
        submit.click(
            predict, inputs=[image, *extra_inputs], outputs=[*outputs, state, status], api_name="predict",
            concurrency_limit=1,
        )
        for setting in rerender:
            # Moving a slider redraws the last result; the model does not run again.
            setting.change(
                lambda current, *settings: _redraw(predictor, colours, current, *settings),
                inputs=[state, *extra_inputs],
                outputs=[*outputs, status],
                api_name=False,
                trigger_mode="always_last",
                show_progress="hidden",
            )
    app.examples_folder = str(Path(examples[0]).parent)
    return app


def _task_outputs(predictor: Predictor, colours):
    """(output components, extra inputs of the prediction, the inputs whose change redraws the last result)."""
    if predictor.task == "classification":
        return [gr.Label(num_top_classes=TOP_K, label=f"Top {TOP_K}", elem_id="top5")], [], []
    if predictor.task == "segmentation":
        picture = gr.Image(type="pil", format="png", label="Segmentation", interactive=False, elem_id="overlay")
        opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Overlay opacity", elem_id="opacity")
        legend = gr.HTML(label="Classes present", elem_id="legend")
        return [picture, legend], [opacity], [opacity]
    picture = gr.Image(type="pil", format="png", label="Detections", interactive=False, elem_id="boxes")
    threshold = gr.Slider(0.0, 1.0, value=DEFAULT_THRESHOLD, step=0.01, label="Score threshold", elem_id="threshold")
    table = gr.Dataframe(headers=TABLE_HEADERS, label="Boxes", interactive=False, elem_id="box-table")
    return [picture, table], [threshold], [threshold]


def _show(predictor: Predictor, colours, picture, prediction: Prediction, *settings) -> tuple[tuple, str]:
    """(the output components' values, a one-line summary for the status) for one prediction."""
    if predictor.task == "classification":
        best, probability = next(iter(prediction.top5.items()))
        return (prediction.top5,), f"top label {best} ({probability:.1%})"
    if predictor.task == "segmentation":
        (opacity,) = settings
        rows = legend_rows(prediction.mask, predictor.id2label, colours)
        drawn = overlay(picture, prediction.mask, colours, opacity, transparent_ids(predictor.id2label))
        return (drawn, legend_html(rows)), f"{len(rows)} classes present"
    (threshold,) = settings
    kept = [found for found in prediction.detections if found.score >= threshold]
    rows = table_rows(kept, scale=picture.info.get("uploaded_size", picture.size)[0] / picture.width)
    return (draw_detections(picture, kept, colours), rows), f"{len(kept)} boxes with score ≥ {threshold:.2f}"


def _empty(predictor: Predictor) -> tuple:
    if predictor.task == "classification":
        return (None,)
    if predictor.task == "segmentation":
        return None, ""
    return None, []


def _redraw(predictor: Predictor, colours, current, *settings):
    if current is None:
        return (*(gr.skip() for _ in _empty(predictor)), gr.skip())
    picture, prediction, notes, name = current
    try:
        shown, summary = _show(predictor, colours, picture, prediction, *settings)
        return (*shown, _status_ok(name, prediction, notes, summary))
    except Exception as error:
        return (*_empty(predictor), _failure(error))


def launch(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    block: bool = True,
    max_pixels: int = MAX_PIXELS,
    quiet: bool = True,
):
    """Builds and starts the app; returns it (its `local_url`, `share_url`). `block=False` returns while it serves."""
    app = build_app(predictor, max_pixels=max_pixels)
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=True,
        quiet=quiet,
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=[app.examples_folder],
        ssr_mode=False,
    )
    if block:
        app.block_thread()
    return app
