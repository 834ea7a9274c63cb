"""Architecture boundaries: the library stays free of Prefect, and the pinned stack imports together."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tailguard"


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_tailguard_does_not_import_prefect():
    code = (
        "import sys, tailguard, tailguard.pipeline, tailguard.data, tailguard.demo, tailguard.settings\n"
        "print('prefect' in sys.modules)"
    )
    assert _run(code).strip() == "False"


def _imports(path: Path) -> list[str]:
    """Top-level package names a source file imports (anywhere in the file, lazy imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module.split(".")[0])
    return names


def _imported_by_name(path: Path) -> list[str]:
    """Top-level names passed as a string to importlib.import_module or __import__ (dynamic imports)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.append(node.args[0].value.split(".")[0])
    return names


# What the library may never import: Prefect, and the flows/tasks above it (under their installed names
# and their folder names), so the library, its CLI included, runs where neither is installed.
ABOVE_THE_LIBRARY = {"prefect", "tailguard_flows", "tailguard_tasks", "flows", "tasks"}


def test_library_source_never_imports_prefect_flows_or_tasks():
    offenders = [
        f"{p.relative_to(SRC)} imports {name}"
        for p in sorted(SRC.rglob("*.py"))
        for name in _imports(p) + _imported_by_name(p)
        if name in ABOVE_THE_LIBRARY
    ]
    assert offenders == []


def test_import_tailguard_cli_leaves_prefect_flows_and_tasks_out():
    """The library's CLI (every command but those above the flows) starts without Prefect (~2 s)."""
    code = (
        "import sys, tailguard.cli, tailguard.commands, tailguard.scoring, tailguard.options\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('prefect', 'tailguard_flows', 'tailguard_tasks')))"
    )
    assert _run(code).strip() == "[]"


def test_console_command_is_the_cli_above_the_flows():
    """`tailguard` is tailguard_flows.cli: the library's app plus the commands that run or answer flows."""
    import tomllib

    config = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert config == {"tailguard": "tailguard_flows.cli:main"}
    code = (
        "import typer.main, tailguard.cli\n"
        "library = sorted(typer.main.get_command(tailguard.cli.app).commands)\n"
        "import tailguard_flows.cli\n"
        "full = sorted(typer.main.get_command(tailguard_flows.cli.app).commands)\n"
        "print(library); print(sorted(set(full) - set(library)))"
    )
    library, above = _run(code).strip().splitlines()
    assert above == str(sorted(["approve", "automations", "demo", "retrain", "reviews"]))
    for name in ("balance", "demo-data", "metrics", "models", "predict", "promote", "reports", "rollback",
                 "train", "upload-batch", "validate"):  # fmt: skip
        assert repr(name) in library


def test_one_adapter_module_per_third_party_library():
    owners = {
        "great_expectations": {"validation.py"},
        "evidently": {"reports.py"},
        "boto3": {"store.py"},
        "botocore": {"store.py"},
    }
    misplaced = [
        f"{path.name} imports {top}"
        for path in SRC.rglob("*.py")
        for top in _imports(path)
        if top in owners and path.name not in owners[top]
    ]
    assert misplaced == []


def test_prefect_yaml_retrain_parameters_are_valid_retrain_params():
    """A typo in a deployment's parameters (e.g. a TrainConfig field) fails here, not on Monday at 03:00."""
    import yaml

    from tailguard.pipeline import RetrainParams

    config = yaml.safe_load((SRC.parents[1] / "prefect.yaml").read_text())
    retrains = [d for d in config["deployments"] if d["entrypoint"] == "flows/retrain.py:retrain"]
    assert {d["name"] for d in retrains} == {"retrain-weekly", "retrain"}
    for deployment in retrains:
        params = RetrainParams(**{"data": "batch.csv", **deployment.get("parameters", {})})
        assert params.approval == deployment["parameters"]["approval"]
    weekly = RetrainParams(**next(d for d in retrains if d["name"] == "retrain-weekly")["parameters"])
    assert weekly.train_options == {"early_stopping_patience": 2} and weekly.epochs == 8


def test_every_package_folder_is_installed():
    """pyproject lists packages by hand (flows/ and tasks/ install under other names): a new subpackage of
    src/tailguard that is not listed would be missing from a wheel and from the worker image."""
    import tomllib

    config = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        "tailguard" + "".join(f".{part}" for part in init.parent.relative_to(SRC).parts)
        for init in SRC.rglob("__init__.py")
    }
    assert folders - set(config["packages"]) == set()
    assert config["package-dir"] == {
        "tailguard": "src/tailguard",
        "tailguard_flows": "flows",
        "tailguard_tasks": "tasks",
    }
