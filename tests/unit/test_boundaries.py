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


def test_library_source_never_imports_prefect():
    offenders = [f"{p.name}" for p in SRC.rglob("*.py") if "prefect" in _imports(p)]
    assert offenders == []


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
