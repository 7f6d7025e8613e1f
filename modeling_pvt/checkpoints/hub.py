"""Hub-ready folders and publishing, shared by `scripts/convert_checkpoint.py`, `scripts/push_to_hub.py` and the
fine-tuning script's `--push_to_hub`, so that every route produces the same repository layout:

    config.json (with auto_map)   model.safetensors (or shards + model.safetensors.index.json)
    preprocessor_config.json      configuration_pvt.py  modeling_pvt.py  image_processing_pvt.py
    README.md (model card)

Tokens are only handed to `huggingface_hub` (argument, `HF_TOKEN` or `hf auth login`); nothing here writes one.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.constants import is_offline_mode
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    HTTPError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
)
from huggingface_hub.utils import validate_repo_id

from .model_card import render_model_card

# PVT-Large is ~250 MB in float32, so published presets stay one file; bigger custom models get shards.
DEFAULT_MAX_SHARD_SIZE = "2GB"
REQUIRED_FILES = ("config.json", "preprocessor_config.json", "README.md")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


# transformers' save_pretrained draws this progress bar on every save, even of one small shard in a blink.
SHARD_PROGRESS_BAR = "Writing model shards"


@contextmanager
def quiet_shard_writing():
    """Hides transformers' "Writing model shards" progress bar (only that one) inside the block: a fine-tuning run
    saves after every checkpoint and at the end, and the terminal should show one progress bar, the run's."""
    from transformers.utils import logging as transformers_logging

    set_hook = getattr(transformers_logging, "set_tqdm_hook", None)  # transformers >= 5.x with tqdm hooks
    if set_hook is None:
        yield
        return
    previous = None

    def hook(factory, args, kwargs):
        if kwargs.get("desc") == SHARD_PROGRESS_BAR:
            kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous else factory(*args, **kwargs)

    previous = set_hook(hook)
    try:
        yield
    finally:
        set_hook(previous)


class PublishError(RuntimeError):
    """A Hub folder could not be written or uploaded; the message says why and what to do."""


def save_hub_folder(
    model,
    image_processor,
    output_dir,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    model_card: str | None = None,
    extra_files: dict[str, str] | None = None,
    **card_kwargs,
) -> Path:
    """Writes `model`, `image_processor`, the remote-code files and a model card to `output_dir`, atomically.

    Everything is written to a temporary sibling folder first and renamed into place at the end, so an
    interrupted run never leaves a half-written checkpoint. An existing non-empty `output_dir` is only replaced
    when `overwrite=True`. The README is `model_card` if given (e.g. a fine-tuned model's existing card), else
    `render_model_card(model, **card_kwargs)` (variant, eval_results, dataset_name, …). `extra_files` (name -> text)
    are written last, replacing files of the same name (e.g. the remote code and config of a head model).
    """
    output_dir = Path(output_dir).resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise PublishError(f"{output_dir} exists and is a file; choose a folder path for the output.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise PublishError(
            f"{output_dir} already exists and is not empty. Choose a new folder, or replace it with overwrite=True "
            "(--overwrite on the command line)."
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        with quiet_shard_writing():
            model.save_pretrained(staging, max_shard_size=max_shard_size)
        image_processor.save_pretrained(staging)
        card = model_card if model_card is not None else render_model_card(model, **card_kwargs)
        (staging / "README.md").write_text(card, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        _give_default_permissions(staging)
        _replace_folder(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _give_default_permissions(folder: Path) -> None:
    """mkdtemp (and transformers' own temporary files) create owner-only entries; a published folder should get
    the permissions any other new file would get under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _replace_folder(new: Path, target: Path) -> None:
    """Moves `new` to `target`; an existing `target` is set aside first and deleted only after the move."""
    if not target.exists():
        new.rename(target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    target.rename(retired / target.name)
    try:
        new.rename(target)
    except BaseException:
        (retired / target.name).rename(target)
        raise
    shutil.rmtree(retired)


def check_hub_folder(folder) -> Path:
    """Raises `PublishError` naming what is missing unless `folder` looks like a folder from `save_hub_folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder. Create one with scripts/convert_checkpoint.py first.")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not list(folder.glob("modeling_*.py")):
        missing.append("the remote-code files (modeling_pvt.py, configuration_pvt.py)")
    if missing:
        raise PublishError(
            f"{folder} is not a complete Hub folder; missing: {', '.join(missing)}. Write it with "
            "scripts/convert_checkpoint.py (or the fine-tuning script) instead of assembling it by hand."
        )
    return folder


def check_push_target(repo_id: str, token: str | None = None) -> str:
    """Checks, before a long run, what would make its upload fail at the end: the repo id's form, a token, and that
    the Hub answers and accepts the token. Returns the account name; raises `PublishError` saying what to fix."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(_explain(error, repo_id)) from error
    if is_offline_mode():
        raise PublishError(
            "HF_HUB_OFFLINE is set, so the model could not be pushed at the end. Unset it, or drop --push_to_hub "
            "and push the finished folder later with `python scripts/push_to_hub.py FOLDER REPO_ID`."
        )
    token = token or get_token()
    if not token:
        raise PublishError(_explain(LocalTokenNotFoundError(), repo_id))
    try:
        return HfApi(token=token).whoami()["name"]
    except (HfHubHTTPError, HTTPError, OfflineModeIsEnabled, OSError) as error:
        raise PublishError(_explain(error, repo_id)) from error


def plain_folder_as_hub_folder(folder, staging) -> Path:
    """A folder written by plain `model.save_pretrained` + `processor.save_pretrained` (no card, no remote code) as a
    complete Hub folder in `staging`: the model is loaded and saved again with the code files and a rendered card.
    `folder` itself is not changed."""
    from transformers import AutoConfig

    from .. import modeling_pvt, modeling_pvt_detection
    from ..image_processing_pvt import PvtImageProcessor

    config = AutoConfig.from_pretrained(folder)
    class_name = (getattr(config, "architectures", None) or ["PvtModel"])[0]
    model_class = getattr(modeling_pvt, class_name, None) or getattr(modeling_pvt_detection, class_name, None)
    if model_class is None:
        raise PublishError(f"{folder} holds a {class_name}, not a PVT model of this package; nothing was pushed.")
    model = model_class.from_pretrained(folder)
    try:
        processor = PvtImageProcessor.from_pretrained(folder)
    except OSError:
        processor = PvtImageProcessor()
    return save_hub_folder(model, processor, staging)


def push_folder(
    folder,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Uploads `folder` to the model repo `repo_id` in one commit and returns the commit URL.

    Creates the repo (and the branch `revision`) if needed. `token=None` uses `HF_TOKEN` or the token saved by
    `hf auth login`. Hub and network failures raise `PublishError` with the cause and the fix; the local folder is
    never modified.
    """
    folder = check_hub_folder(folder)
    api = HfApi(token=token)
    try:
        validate_repo_id(repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload PVT v1 model from {folder.name}",
        )
    except (HfHubHTTPError, HTTPError, OfflineModeIsEnabled, LocalTokenNotFoundError, HFValidationError) as error:
        raise PublishError(f"{_explain(error, repo_id)} The local folder {folder} is unchanged.") from error
    return commit.commit_url


def _explain(error: Exception, repo_id: str) -> str:
    if isinstance(error, HFValidationError):
        return f"{repo_id!r} is not a valid repo id ({error}). Use the form 'org-or-user/model-name'."
    if isinstance(error, LocalTokenNotFoundError):
        return "No Hugging Face token found. Run `hf auth login` or set HF_TOKEN, then rerun."
    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so nothing can be uploaded. Unset it and rerun."
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 401:
        return (
            f"The Hub rejected the token (HTTP 401) while pushing to {repo_id}. Run `hf auth login` or set HF_TOKEN "
            "to a valid token with write access, then rerun."
        )
    if status == 403:
        return (
            f"The token may not write to {repo_id} (HTTP 403). Use a token with write access to the "
            f"'{repo_id.split('/')[0]}' namespace, or push to a namespace you own."
        )
    if status == 404:
        return (
            f"{repo_id} (or its namespace or branch) was not found on the Hub (HTTP 404). Check the spelling of the "
            "organisation / user name and that your account belongs to it."
        )
    if status is not None:
        return f"The Hub answered HTTP {status} while pushing to {repo_id}: {error}. Rerun later."
    return (
        f"Could not reach the Hugging Face Hub while pushing to {repo_id} ({type(error).__name__}: {error}). Check the "
        "network connection (and HF_ENDPOINT if set), then rerun."
    )
