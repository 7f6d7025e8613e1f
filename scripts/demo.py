"""A demo page for a PVT checkpoint: drop a picture on it in the browser and see what the model makes of it.

    python scripts/demo.py                                   # the main job's model (python scripts/finetune.py)
    python scripts/demo.py --model outputs/pvt-tiny-grid-digits/model
    python scripts/demo.py --model org/pvt-small --port 8080 --host 0.0.0.0

The page follows the checkpoint's task (from its config): top-5 classes, a segmentation overlay with its legend, or
boxes with a score threshold and a table. Needs the demo extra: pip install -e ".[demo]". Errors are one `error: …`
line; a bare --debug (or PVT_DEBUG=1) shows the traceback. More: docs/demo.md.
"""

import argparse
import importlib.util
import os
import runpy
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "modeling_pvt"
INSTALL_HINT = 'the demo needs Gradio, an optional extra: pip install -e ".[demo]" (or pip install "gradio>=5")'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        metavar="FOLDER_OR_REPO_ID",
        help="a saved model folder or a Hub repo id; default outputs/pvt-tiny-sklearn-digits/model, which "
        "`python scripts/finetune.py` writes",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on; 0.0.0.0 for other machines too")
    parser.add_argument("--port", type=int, help="port to serve on; default 7860, or the next free one")
    parser.add_argument("--share", action="store_true", help="also open a temporary public *.gradio.live link")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (or set PVT_DEBUG=1)"
    )
    return parser


def check_arguments(args, predict) -> str:
    """The model to load, after the checks that need neither torch nor Gradio (`predict`: the namespace of
    modeling_pvt/demo/predict.py). Raises ValueError/ImportError with what to do."""
    source = predict["check_model_source"](args.model)
    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a port number (1-65535)")
    if Path(source).is_dir():  # a repo id's config is read when it loads
        predict["task_of"](predict["read_config"](source), source)
    if importlib.util.find_spec("gradio") is None:
        raise ImportError(INSTALL_HINT)
    return source


def check_before_imports(argv: list[str]) -> None:
    """Flag mistakes, a missing model, a backbone, a bad port or no Gradio reported in a fraction of a second, as
`run_cli` would report them: predict.py is read by path, as it needs only numpy and PIL, not torch."""
    if "--debug" in argv or os.environ.get("PVT_DEBUG", "").lower() not in ("", "0", "false", "no"):
        return  # the full run shows the traceback
    parser = build_parser()

    def usage_error(message):
        print(f"error: {message}. Run {parser.prog} --help for the options.", file=sys.stderr, flush=True)
        sys.exit(2)

    parser.error = usage_error
    args = parser.parse_args(argv)
    try:
        check_arguments(args, runpy.run_path(str(PACKAGE / "demo" / "predict.py")))
    except (ValueError, ImportError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":  # mistakes in milliseconds, before the imports below load torch
    runpy.run_path(str(PACKAGE / "cli.py"))["check_command_line"](__file__)
    check_before_imports(sys.argv[1:])

# Python puts this folder first on sys.path, where scripts/evaluate.py would shadow the `evaluate` library.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

from modeling_pvt.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from modeling_pvt.demo import predict

    source = check_arguments(args, vars(predict))

    from transformers.utils import logging

    from modeling_pvt.demo.app import launch

    logging.disable_progress_bar()  # one line per step, not a weight-loading bar
    print(f"Loading {source} ...", flush=True)
    predictor = predict.Predictor.from_pretrained(source)
    app = launch(predictor, host=args.host, port=args.port, share=args.share, block=False)
    print(f"Demo of {source} ({predictor.task}) running on {app.local_url}", flush=True)
    if args.share and app.share_url:
        print(f"Public link (for 1 week at most): {app.share_url}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    app.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
