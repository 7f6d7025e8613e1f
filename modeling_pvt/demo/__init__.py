"""A Gradio demo page for a PVT checkpoint, its interface chosen by the checkpoint's task (classification,
semantic segmentation, object detection), and a Hub Space folder that runs it.

- `predict`: the model side (task from the config, uploads read into RGB images, one prediction per task); no Gradio.
- `render`: overlays, legends, boxes and the example pictures; no Gradio.
- `app`: the Blocks page and `launch` (imports Gradio, the optional `demo` extra).
- `space`: writes a Hub Space folder (`app.py`, `requirements.txt`, README.md) for a pushed model.

Nothing here is imported by `modeling_pvt` itself, and importing this package does not import Gradio.
Command line: `python scripts/demo.py --model FOLDER_OR_REPO_ID`."""
