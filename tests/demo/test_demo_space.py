"""The Hub Space folder: what `write_space` / `scripts/push_to_hub.py --space` write, what they refuse, and its
app.py serving the demo."""

import runpy
from pathlib import Path

import pytest
import yaml
from demo_helpers import TOP_CLASS, photo, require_gradio, tiny_classifier_folder

from modeling_pvt.cli import run_cli
from modeling_pvt.demo.space import MARKER, write_space

REPO = Path(__file__).resolve().parents[2]
PACKAGE_FOLDER = REPO / "modeling_pvt"
push_main = runpy.run_path(str(REPO / "scripts" / "push_to_hub.py"))["main"]
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # Gradio's use of pandas, not ours


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return tiny_classifier_folder(tmp_path_factory.mktemp("space-model") / "classifier")


def _front_matter(readme: Path) -> dict:
    _, front, _ = readme.read_text().split("---\n", 2)
    return yaml.safe_load(front)


def test_the_space_folder(tmp_path, model_folder):
    space = write_space("my-org/pvt-tiny-demo", tmp_path / "space", model_folder=model_folder)
    app = (space / "app.py").read_text()
    assert app.startswith(MARKER) and 'os.environ.get("PVT_DEMO_MODEL", "my-org/pvt-tiny-demo")' in app
    compile(app, "app.py", "exec")
    front = _front_matter(space / "README.md")
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["models"] == ["my-org/pvt-tiny-demo"]
    assert front["sdk_version"][0].isdigit() and len(front["short_description"]) <= 60 and len(front["title"]) <= 30
    assert "PVT classification demo" in (space / "README.md").read_text()
    requirements = (space / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("torch") for line in requirements)
    assert any(line.startswith("transformers") for line in requirements)
    assert not any("extra" in line or "pytest" in line for line in requirements), requirements
    assert (space / "modeling_pvt" / "demo" / "app.py").is_file() and (space / "modeling_pvt" / "__init__.py").is_file()
    assert not list(space.rglob("__pycache__"))


def test_the_space_folder_refuses_what_it_must_not_replace(tmp_path, model_folder):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no Space written here before"):
        write_space("my-org/pvt", tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="not a Hub repo id"):
        write_space("outputs/pvt/model", tmp_path / "space")
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    (backbone / "config.json").write_text('{"architectures": ["PvtBackbone"]}')
    with pytest.raises(ValueError, match="task head"):
        write_space("my-org/pvt", tmp_path / "space", model_folder=backbone)
    # A Space written here before is rewritten in place.
    write_space("my-org/old", tmp_path / "space")
    write_space("my-org/new", tmp_path / "space")
    assert "my-org/new" in (tmp_path / "space" / "app.py").read_text()


def test_push_to_hub_writes_the_space_first(tmp_path, model_folder, monkeypatch, capsys):
    pushed = []
    fake_push = lambda folder, repo_id, **_: pushed.append(repo_id) or "url"  # noqa: E731
    monkeypatch.setitem(push_main.__globals__, "push_folder", fake_push)
    assert run_cli(push_main, [str(model_folder), "my-org/pvt-tiny", "--space", str(tmp_path / "space")]) == 0
    assert pushed == ["my-org/pvt-tiny"] and (tmp_path / "space" / "app.py").is_file()
    assert "hf upload my-org/pvt-tiny-demo " in capsys.readouterr().out
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "data.csv").write_text("1")
    assert run_cli(push_main, [str(model_folder), "my-org/pvt-tiny", "--space", str(tmp_path / "taken")]) == 1
    assert "error: --space" in capsys.readouterr().err and pushed == ["my-org/pvt-tiny"]  # nothing pushed


def test_the_space_app_serves_the_demo(tmp_path, model_folder, monkeypatch):
    """The Space's app.py run as a script (here with the model from PVT_DEMO_MODEL, a local folder, and the installed
    package; on the Hub the copy beside it and the repo id), until it would block serving."""
    require_gradio()
    import gradio
    from gradio_client import Client, handle_file

    space = write_space("my-org/pvt-tiny", tmp_path / "space")
    started = []
    monkeypatch.setenv("PVT_DEMO_MODEL", str(model_folder))
    monkeypatch.setattr(gradio.Blocks, "block_thread", lambda app: started.append(app))
    runpy.run_path(str(space / "app.py"), run_name="__main__")
    (app,) = started
    try:
        # Gradio's own default address and port (on a Space, from GRADIO_SERVER_NAME/PORT).
        assert app.local_url.startswith("http://127.0.0.1:")
        top, _ = Client(app.local_url, verbose=False).predict(handle_file(str(photo(tmp_path))), api_name="/predict")
        assert top["label"] == TOP_CLASS
    finally:
        app.close()
    # The copy holds every module and data file of the package, so `import modeling_pvt` there is this package.
    package = REPO / "modeling_pvt"
    wanted = {path.relative_to(package) for path in package.rglob("*") if path.suffix in (".py", ".json")}
    copied = {path.relative_to(space / "modeling_pvt") for path in (space / "modeling_pvt").rglob("*")}
    assert wanted <= copied
    assert not list(PACKAGE_FOLDER.rglob("*.pyi")), "Gradio wrote stub files into the package"
