"""Hub folders and publishing, offline: `huggingface_hub.HfApi` is replaced at its API boundary (create_repo,
create_branch, upload_folder) by a fake that records the calls and keeps a copy of what would be uploaded."""

import hashlib
import os
import runpy
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import httpx2
import huggingface_hub
import pytest
import torch
from conftest import tiny_config
from helpers import (
    REMOTE_CODE_FILES,
    REPO,
    lay_out_as_hub_cache,
    read_json,
    run_without_package,
)
from huggingface_hub.errors import HfHubHTTPError

from modeling_pvt import PvtForImageClassification, PvtImageProcessor
from modeling_pvt.checkpoints import hub
from modeling_pvt.checkpoints.hub import PublishError, push_folder, save_hub_folder
from modeling_pvt.cli import run_cli

PUSH_SCRIPT = REPO / "scripts" / "push_to_hub.py"
push_script_main = runpy.run_path(str(PUSH_SCRIPT))["main"]


def push_main(argv: list[str]) -> int:
    return run_cli(push_script_main, argv)
SECRET_TOKEN = "hf_TestOnlySecretToken0123456789"


def snapshot(folder: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


@pytest.fixture
def model():
    return PvtForImageClassification(tiny_config(num_labels=3, id2label={0: "ant", 1: "bee", 2: "cat"})).eval()


@pytest.fixture
def hub_folder(tmp_path, model) -> Path:
    return save_hub_folder(model, PvtImageProcessor.for_evaluation(224), tmp_path / "export", variant=None)


class FakeHub:
    """Stands in for the Hub: records create_repo / create_branch / upload_folder and copies the uploaded folder."""

    def __init__(self, remote: Path, failure: Exception | None = None, failing_call: str = "upload_folder"):
        self.remote, self.failure, self.failing_call = remote, failure, failing_call
        self.calls = []

    def install(self, monkeypatch):
        def recorder(name):
            def method(api, *args, **kwargs):
                self.calls.append((name, args, kwargs))
                if self.failure is not None and name == self.failing_call:
                    raise self.failure
                if name == "upload_folder":
                    shutil.copytree(kwargs["folder_path"], self.remote)
                    return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123")
                return None

            return method

        for name in ("create_repo", "create_branch", "upload_folder", "create_commit"):
            monkeypatch.setattr(huggingface_hub.HfApi, name, recorder(name))
        return self

    def called(self, name):
        return [(args, kwargs) for call, args, kwargs in self.calls if call == name]


def http_error(status: int) -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} Client Error", response=httpx2.Response(status, request=request))


def test_hub_folder_has_the_published_layout(hub_folder, model):
    assert set(snapshot(hub_folder)) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        *REMOTE_CODE_FILES,
    }
    assert read_json(hub_folder / "config.json")["auto_map"]["AutoModelForImageClassification"] == (
        "modeling_pvt.PvtForImageClassification"
    )
    assert read_json(hub_folder / "preprocessor_config.json")["auto_map"]["AutoImageProcessor"] == (
        "image_processing_pvt.PvtV1ImageProcessor"
    )
    assert (hub_folder / "README.md").read_text().startswith("---\n")
    assert not [path for path in hub_folder.parent.iterdir() if path.name.startswith(".")]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(hub_folder.stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(path.stat().st_mode) for path in hub_folder.iterdir()} == {0o666 & ~umask}


def test_saving_shows_no_shard_progress_bar_but_leaves_other_bars(tmp_path, model, monkeypatch, capsys):
    from transformers.utils import logging as transformers_logging

    monkeypatch.setattr(transformers_logging, "_tqdm_active", True)  # as on a user's terminal
    model.save_pretrained(tmp_path / "plain")
    assert hub.SHARD_PROGRESS_BAR in capsys.readouterr().err  # transformers' own bar, which the folder hides
    save_hub_folder(model, PvtImageProcessor(), tmp_path / "quiet")
    with hub.quiet_shard_writing():
        model.save_pretrained(tmp_path / "checkpoint")  # as Trainer saves inside the run loop
        list(transformers_logging.tqdm(range(2), desc="Loading weights"))
    err = capsys.readouterr().err
    assert hub.SHARD_PROGRESS_BAR not in err and "Loading weights" in err


def test_large_weights_are_sharded_and_load_back(tmp_path, model):
    folder = save_hub_folder(model, PvtImageProcessor(), tmp_path / "sharded", max_shard_size="40KB")
    shards = sorted(path.name for path in folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    assert not (folder / "model.safetensors").exists()
    reloaded = PvtForImageClassification.from_pretrained(folder)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, msg=name)


def test_existing_folder_is_kept_unless_overwrite(tmp_path, model, hub_folder):
    before = snapshot(hub_folder)
    with pytest.raises(PublishError, match="already exists and is not empty.*overwrite=True"):
        save_hub_folder(model, PvtImageProcessor(), hub_folder)
    assert snapshot(hub_folder) == before

    (hub_folder / "stale.txt").write_text("from an older export")
    save_hub_folder(model, PvtImageProcessor(), hub_folder, overwrite=True)
    assert not (hub_folder / "stale.txt").exists() and (hub_folder / "model.safetensors").is_file()


def test_a_failure_while_writing_leaves_no_partial_folder_and_the_old_one_intact(
    tmp_path, model, hub_folder, monkeypatch
):
    def failing_card(*args, **kwargs):
        raise RuntimeError("disk full while writing the card")

    monkeypatch.setattr(hub, "render_model_card", failing_card)
    before = snapshot(hub_folder)
    with pytest.raises(RuntimeError, match="disk full"):
        save_hub_folder(model, PvtImageProcessor(), hub_folder, overwrite=True)
    with pytest.raises(RuntimeError, match="disk full"):
        save_hub_folder(model, PvtImageProcessor(), tmp_path / "new_export")
    assert snapshot(hub_folder) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]


def test_push_uploads_one_commit_and_the_uploaded_folder_loads_by_repo_id(tmp_path, hub_folder, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET_TOKEN)
    fake = FakeHub(tmp_path / "remote").install(monkeypatch)

    code = push_main([str(hub_folder), "my-org/pvt-test", "--private", "--revision", "v1", "--commit-message", "First"])

    assert code == 0, capsys.readouterr().err
    assert "https://huggingface.co/my-org/pvt-test/commit/abc123" in capsys.readouterr().out
    ((create_args, create_kwargs),) = fake.called("create_repo")
    assert create_args == ("my-org/pvt-test",) and create_kwargs["private"] is True and create_kwargs["exist_ok"]
    ((_, branch_kwargs),) = fake.called("create_branch")
    assert branch_kwargs["branch"] == "v1"
    ((_, upload),) = fake.called("upload_folder")
    assert upload["repo_id"] == "my-org/pvt-test" and upload["revision"] == "v1"
    assert upload["commit_message"] == "First"
    assert Path(upload["folder_path"]) == hub_folder
    assert not fake.called("create_commit")
    assert set(snapshot(tmp_path / "remote")) == set(snapshot(hub_folder))
    for path in (tmp_path / "remote").iterdir():
        assert SECRET_TOKEN.encode() not in path.read_bytes(), path.name

    env = lay_out_as_hub_cache(tmp_path / "remote", tmp_path / "hf_home", "my-org/pvt-test")
    expected = PvtForImageClassification.from_pretrained(hub_folder).eval()
    pixel_values = torch.randn(1, 3, 224, 224)
    torch.save({"pixel_values": pixel_values, "logits": expected(pixel_values).logits.detach()}, tmp_path / "x.pt")
    stdout = run_without_package(
        """
        import numpy as np, torch
        from PIL import Image
        from transformers import AutoModel, AutoModelForImageClassification, pipeline
        expected = torch.load("x.pt")
        base = AutoModel.from_pretrained("my-org/pvt-test", trust_remote_code=True)
        model = AutoModelForImageClassification.from_pretrained("my-org/pvt-test", trust_remote_code=True).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(expected["pixel_values"]).logits, expected["logits"])
        classify = pipeline("image-classification", model="my-org/pvt-test", trust_remote_code=True)
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
        print(type(base).__name__, sorted(p["label"] for p in classify(image)))
        """,
        tmp_path,
        env=env,
    )
    assert "PvtModel ['ant', 'bee', 'cat']" in stdout


@pytest.mark.parametrize(
    "failure, failing_call, expected",
    [
        (http_error(401), "create_repo", ["HTTP 401", "hf auth login", "HF_TOKEN"]),
        (http_error(403), "upload_folder", ["HTTP 403", "write access"]),
        (http_error(404), "create_branch", ["HTTP 404", "my-org/pvt-test", "spelling"]),
        (httpx2.ReadTimeout("The read operation timed out"), "upload_folder", ["Could not reach", "timed out"]),
    ],
    ids=["401", "403", "404", "timeout"],
)
def test_hub_errors_exit_non_zero_with_a_clear_message_and_leave_the_folder(
    tmp_path, hub_folder, monkeypatch, capsys, failure, failing_call, expected
):
    FakeHub(tmp_path / "remote", failure, failing_call).install(monkeypatch)
    before = snapshot(hub_folder)

    code = push_main([str(hub_folder), "my-org/pvt-test", "--revision", "dev"])

    err = capsys.readouterr().err
    assert code == 1
    for text in expected:
        assert text in err
    assert f"The local folder {hub_folder} is unchanged." in err
    assert snapshot(hub_folder) == before


def test_incomplete_folder_is_refused_before_contacting_the_hub(tmp_path, hub_folder, monkeypatch):
    fake = FakeHub(tmp_path / "remote").install(monkeypatch)
    (hub_folder / "README.md").unlink()
    (hub_folder / "model.safetensors").unlink()
    with pytest.raises(PublishError, match="missing: README.md, model.safetensors or model.safetensors.index.json"):
        push_folder(hub_folder, "my-org/pvt-test")
    assert fake.calls == []


def test_invalid_repo_id_is_explained(tmp_path, hub_folder, monkeypatch):
    fake = FakeHub(tmp_path / "remote").install(monkeypatch)
    with pytest.raises(PublishError, match="not a valid repo id.*org-or-user/model-name"):
        push_folder(hub_folder, "not a/valid//id")
    assert fake.calls == []


def test_push_target_is_checked_before_a_run(monkeypatch):
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set.*scripts/push_to_hub.py FOLDER REPO_ID"):
        hub.check_push_target("my-org/pvt-test")
    with pytest.raises(PublishError, match="not a valid repo id"):
        hub.check_push_target("not a/valid//id")
    monkeypatch.setattr(hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(hub, "get_token", lambda: None)
    with pytest.raises(PublishError, match="No Hugging Face token found"):
        hub.check_push_target("my-org/pvt-test")

    def unreachable(api, *args, **kwargs):
        raise httpx2.ConnectError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", unreachable)
    with pytest.raises(PublishError, match="Could not reach the Hugging Face Hub"):
        hub.check_push_target("my-org/pvt-test", token=SECRET_TOKEN)
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda api, *args, **kwargs: {"name": "someone"})
    assert hub.check_push_target("my-org/pvt-test", token=SECRET_TOKEN) == "someone"


def test_a_plain_save_pretrained_folder_gets_a_card_and_is_pushed(tmp_path, model, monkeypatch, capsys):
    plain = tmp_path / "plain"
    model.save_pretrained(plain)
    PvtImageProcessor().save_pretrained(plain)
    before = snapshot(plain)
    fake = FakeHub(tmp_path / "remote").install(monkeypatch)

    assert push_main([str(plain), "my-org/pvt-plain"]) == 0, capsys.readouterr().err

    assert "has no README.md (plain save_pretrained output): rendered a model card" in capsys.readouterr().out
    assert len(fake.called("upload_folder")) == 1 and snapshot(plain) == before
    uploaded = set(snapshot(tmp_path / "remote"))
    assert {"README.md", "modeling_pvt.py", "configuration_pvt.py", "model.safetensors"} <= uploaded
    assert "ant" in read_json(tmp_path / "remote" / "config.json")["id2label"].values()
