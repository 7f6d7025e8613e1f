"""The package's folders import one way (docs/architecture.md): each folder only imports folders of a lower rank, so
no two folders import each other, no task imports another task, and the run loop and speed tools import no task."""

import ast

from helpers import REPO

PACKAGE = REPO / "modeling_pvt"
MODEL_FILES = {
    "configuration_pvt",
    "modeling_pvt",
    "modeling_pvt_heads",
    "modeling_pvt_detection",
    "image_processing_pvt",
    "cpu_fast_paths",
}
RANK = {
    "model files": 0,
    "__init__": 1,  # the public API: the model files and their registration
    "data": 2,
    "pictures": 2,
    "checkpoints": 3,
    "cli": 4,
    "training": 5,
    "speed": 5,
    "task": 6,  # tasks/<task>
    "tasks": 7,  # tasks/evaluate.py, the evaluation CLI over every task
    "demo": 7,
    "__main__": 8,
}


def room(module: str) -> str:
    """The folder-level name of a dotted module inside the package."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    if parts[0] in MODEL_FILES:
        return "model files"
    if parts[0] == "tasks" and len(parts) > 1 and (PACKAGE / "tasks" / parts[1]).is_dir():
        return f"task:{parts[1]}"
    return parts[0]


def module_or_package(package: list[str], name: str) -> str:
    folder = PACKAGE.joinpath(*package[1:])
    is_module = (folder / f"{name}.py").is_file() or (folder / name).is_dir()
    return ".".join(package + [name]) if is_module else ".".join(package)


def folder_imports() -> set[tuple[str, str]]:
    edges = set()
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("modeling_pvt", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                # `from .. import modeling_pvt` imports that module; `from . import PvtConfig` the package
                if node.module:
                    targets = [".".join(base + [node.module])]
                else:
                    targets = [module_or_package(base, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("modeling_pvt"):
                targets = [node.module]
            else:
                continue
            for target in targets:
                if room(module) != room(target):
                    edges.add((room(module), room(target)))
    return edges


def rank(name: str) -> int:
    return RANK["task" if name.startswith("task:") else name]


def test_every_folder_imports_only_lower_ranks():
    edges = folder_imports()
    assert ("task:classification", "training") in edges  # the walk sees the imports at all
    upward = sorted((a, b) for a, b in edges if rank(a) <= rank(b))
    assert not upward, f"imports against the layout (see docs/architecture.md): {upward}"


def test_no_module_is_past_the_size_limit():
    sizes = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    # modeling_pvt.py is Hub remote code kept whole, as transformers keeps its modeling files.
    oversized = {path: lines for path, lines in sizes.items() if lines > 650 and path != "modeling_pvt/modeling_pvt.py"}
    assert not oversized
