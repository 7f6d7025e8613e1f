"""Upload a folder written by convert_checkpoint.py (or by the fine-tuning script) to a Hugging Face model repo:
weights, config, remote code, processor config and model card, in one commit. The repo is created if needed.

A folder written by plain `model.save_pretrained(d)` + `processor.save_pretrained(d)` has no model card and no code
files: they are added to a temporary copy (the card rendered from the model) and that copy is pushed.

The token comes from the usual places (HF_TOKEN, or `hf auth login`); it is never written to any file."""

import argparse
import runpy
import sys
import tempfile
from pathlib import Path

# Flag mistakes are reported before the imports below load torch (seconds): modeling_pvt/cli.py is read by path.
if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "modeling_pvt" / "cli.py"))["check_command_line"](__file__)

from modeling_pvt.checkpoints.hub import plain_folder_as_hub_folder, push_folder
from modeling_pvt.cli import DEBUG_HELP, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python scripts/push_to_hub.py pvt-tiny-224 my-org/pvt-tiny-224 --private",
    )
    parser.add_argument("folder", type=Path, help="the Hub-ready folder to upload")
    parser.add_argument("repo_id", help="target model repo, 'org-or-user/name'")
    parser.add_argument("--private", action="store_true", help="create the repo as private (if it does not exist)")
    parser.add_argument("--revision", help="branch to commit to (created from main if missing); default main")
    parser.add_argument("--commit-message", "--commit_message", dest="commit_message", help="commit message")
    parser.add_argument(
        "--space",
        type=Path,
        metavar="OUTPUT_FOLDER",
        help="also write a Hugging Face Space folder (app.py, requirements.txt, README.md) that runs the demo page "
        "for repo_id; publish it with `hf upload REPO_ID-demo OUTPUT_FOLDER --repo-type space` (docs/demo.md)",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.space is not None:  # written first: a folder it must not replace stops the run before the upload
        from modeling_pvt.demo.space import upload_hint, write_space

        write_space(args.repo_id, args.space, model_folder=args.folder)
    with tempfile.TemporaryDirectory(prefix="pvt-push-") as staging:
        folder = args.folder
        if folder.is_dir() and (folder / "config.json").is_file() and not (folder / "README.md").is_file():
            folder = plain_folder_as_hub_folder(args.folder, Path(staging) / args.folder.name)
            print(
                f"{args.folder} has no README.md (plain save_pretrained output): rendered a model card and added the "
                f"remote-code files in a temporary copy, which is what gets pushed; {args.folder} is unchanged.",
                flush=True,
            )
        url = push_folder(
            folder, args.repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message
        )
    print(f"Pushed {args.folder} to {args.repo_id}: {url}")
    if args.space is not None:
        print(upload_hint(args.repo_id, args.space))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
