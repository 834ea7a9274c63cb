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


def test_library_source_never_imports_prefect():
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "prefect"]
    assert offenders == []


def test_one_adapter_module_per_third_party_library():
    owners = {
        "great_expectations": {"validation.py"},
        "evidently": {"reports.py"},
        "boto3": {"store.py"},
        "botocore": {"store.py"},
    }
    misplaced = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            for mod in mods:
                top = mod.split(".")[0]
                if top in owners and path.name not in owners[top]:
                    misplaced.append(f"{path.name} imports {top}")
    assert misplaced == []


def test_pinned_stack_imports_together():
    code = (
        "import evidently, great_expectations, prefect, transformers, pandas, torch\n"
        "print(evidently.__version__, great_expectations.__version__, prefect.__version__,"
        " pandas.__version__,"
        " torch.__version__)"
    )
    evidently_v, gx_v, prefect_v, pandas_v, torch_v = _run(code).split()
    assert evidently_v == "0.7.23"
    assert gx_v.startswith("1.24.")
    assert prefect_v.startswith("3.9.")
    assert int(pandas_v.split(".")[0]) == 2  # evidently 0.7.23 does not import under pandas 3
    assert torch_v.startswith("2.13.0")
