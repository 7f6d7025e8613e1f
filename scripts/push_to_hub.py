"""Upload a folder written by convert_checkpoint.py (or by the fine-tuning script) to a Hugging Face model repo:
weights, config, remote code, processor config and model card, in one commit. The repo is created if needed.

The token comes from the usual places (HF_TOKEN, or `hf auth login`); it is never written to any file."""

import argparse
import sys
from pathlib import Path

from modeling_pvt.hub import PublishError, push_folder


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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        url = push_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
        )
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Pushed {args.folder} to {args.repo_id}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
