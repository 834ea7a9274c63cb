"""Validation with GX suites from expectations/: results, could-not-run, policy bands, data docs, CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tailguard.data import load_batch, quarantine_batch
from tailguard.store import LocalStore, tree_digest
from tailguard.validation import (
    SUITE_NAMES,
    ValidationCouldNotRun,
    ValidationFailed,
    ValidationPolicy,
    batch_stats,
    build_data_docs,
    load_suite_json,
    raise_for_result,
    suite_dir,
    validate_frame,
)

REPO = Path(__file__).resolve().parents[2]


def good(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "query": [f"q{i % 40} {seed}" for i in range(n)],
            "item_id": [f"I{seed}-{i}" for i in range(n)],
            "item_title": [f"lumen desk lamp {i}" for i in range(n)],
            "label": (rng.random(n) < 0.3).astype(np.int8),
            "price": rng.random(n) * 50,
            "category": rng.choice(["lighting", "office"], n),
        }
    )


def test_good_batch_passes_and_stats_are_json() -> None:
    result = validate_frame(good(), "good.csv", None, ValidationPolicy())
    assert result.success, result.message()
    assert result.summary_line().startswith("good.csv: OK, 200 rows")
    stats = json.loads(json.dumps(result.stats))
    assert stats["rows"] == 200 and 0.1 < stats["positive_share"] < 0.5
    assert stats == json.loads(json.dumps(batch_stats(good())))
    # without a previous batch the comparisons are skipped, and say so
    assert any("row_count_vs_previous" in s for s in result.skipped)
    again = validate_frame(good(seed=1), "next.csv", stats, ValidationPolicy())
    assert again.success, again.message()
    assert not any("row_count_vs_previous" in s for s in again.skipped)


def test_failure_names_file_column_rule_observed_and_at_most_5_rows() -> None:
    df = good()
    bad_rows = list(range(10, 60, 5))
    df.loc[bad_rows, "price"] = -3.0
    result = validate_frame(df, "b.csv", None, ValidationPolicy())
    assert not result.success
    (failure,) = result.failures
    assert (failure.file, failure.column, failure.rule) == ("b.csv", "price", "price_non_negative")
    assert failure.unexpected_count == 10 and failure.observed.startswith("10 of 200 rows")
    assert [e["row"] for e in failure.examples] == bad_rows[:5]
    line = result.message().splitlines()[1]
    assert (
        "b.csv" in line
        and "column 'price'" in line
        and "rule 'price_non_negative'" in line
        and "row 10" in line
    )


def test_rows_are_attributed_to_their_file(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    good(150).to_csv(folder / "a.csv", index=False)
    second = good(150, seed=1)
    second.loc[3, "item_title"] = "x" * 2000
    second.to_csv(folder / "b.csv", index=False)
    result = validate_frame(load_batch(folder), str(folder), None, ValidationPolicy())
    (failure,) = result.failures
    assert failure.rule == "title_length_between" and failure.file.endswith("b.csv")
    assert failure.examples[0]["row"] == 153


def test_policy_bands_are_parameters_of_the_suites() -> None:
    df = good()
    assert validate_frame(df, "b", None, ValidationPolicy()).success
    strict = validate_frame(df, "b", None, ValidationPolicy(title_max_length=10, min_rows=500))
    assert {f.rule for f in strict.failures} == {"title_length_between", "min_rows"}


def test_missing_column_is_could_not_run_not_bad_data() -> None:
    result = validate_frame(good().drop(columns=["item_title"]), "b.csv", None, ValidationPolicy())
    assert not result.success and result.could_not_run
    assert "validation could not run" in result.summary_line()
    assert result.to_dict()["status"] == "could_not_run"
    with pytest.raises(ValidationCouldNotRun):
        raise_for_result(result)


def test_broken_expectation_is_reported_as_could_not_run(tmp_path: Path) -> None:
    suites = tmp_path / "suites"
    shutil.copytree(suite_dir(), suites)
    titles = json.loads((suites / "titles.json").read_text())
    titles["expectations"][1]["kwargs"]["regex"] = "([unclosed"
    (suites / "titles.json").write_text(json.dumps(titles))
    result = validate_frame(good(), "b.csv", None, ValidationPolicy(), suite_dir_path=suites)
    assert [c["rule"] for c in result.could_not_run] == ["no_control_characters"]
    assert result.failures == []  # the data was not judged bad
    assert "[could not run]" in result.message()


def test_refused_result_raises_with_every_rule() -> None:
    df = good()
    df["label"] = 1
    df.loc[0, "query"] = None
    with pytest.raises(ValidationFailed) as info:
        raise_for_result(validate_frame(df, "b.csv", None, ValidationPolicy()))
    text = str(info.value)
    assert "rule 'positive_share_between'" in text and "rule 'not_null'" in text


def test_suites_round_trip_and_live_where_expected(monkeypatch, tmp_path: Path) -> None:
    import great_expectations as gx

    assert suite_dir() == REPO / "expectations"
    for name in SUITE_NAMES:
        data = load_suite_json(name)
        suite = gx.ExpectationSuite(**data)
        assert len(suite.expectations) == len(data["expectations"])
    monkeypatch.setenv("TAILGUARD_EXPECTATIONS_DIR", str(REPO / "expectations"))
    assert suite_dir() == REPO / "expectations"
    with pytest.raises(FileNotFoundError, match="rows.json"):
        _no_suites(monkeypatch, tmp_path)


def _no_suites(monkeypatch, tmp_path: Path) -> None:
    import tailguard.validation as v

    monkeypatch.setenv("TAILGUARD_EXPECTATIONS_DIR", str(tmp_path))
    monkeypatch.setattr(v, "__file__", str(tmp_path / "a" / "b" / "c" / "d" / "validation.py"))
    v.suite_dir()


def test_readme_documents_every_rule_with_its_severity() -> None:
    readme = (REPO / "expectations" / "README.md").read_text()
    for name in SUITE_NAMES:
        for exp in load_suite_json(name)["expectations"]:
            rule = exp["meta"]["rule"]
            severity = "warning" if exp.get("severity") == "warning" else "error"
            row = [
                line for line in readme.splitlines() if re.search(rf"`{rule}`", line) and f"`{name}`" in line
            ]
            assert row, f"{name}/{rule} is not documented in expectations/README.md"
            assert severity in row[0], f"{name}/{rule} should be documented as {severity}"


def test_data_docs_land_in_the_folder_given(tmp_path: Path) -> None:
    df = good()
    df.loc[4, "price"] = -1.0
    result = validate_frame(df, "b.csv", None, ValidationPolicy())
    out = build_data_docs(result.to_dict(), tmp_path / "docs")
    assert out == tmp_path / "docs" and (out / "index.html").is_file()
    pages = list(out.rglob("tailguard_rows.html"))
    assert pages and "price" in pages[0].read_text()


def test_quarantine_writes_only_under_quarantine(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes("models/relevance/production.json", b'{"version": "v1"}')
    before = tree_digest(store, exclude_prefix="quarantine/")
    src = tmp_path / "b.csv"
    good().to_csv(src, index=False)
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "sub" / "index.html").write_text("<html/>")
    prefix = quarantine_batch(store, "b-123", [src], {"success": False}, docs)
    assert prefix == "quarantine/b-123"
    assert set(store.list_keys("quarantine/")) == {
        "quarantine/b-123/input/b.csv",
        "quarantine/b-123/validation.json",
        "quarantine/b-123/data_docs/sub/index.html",
    }
    assert store.get_bytes("quarantine/b-123/input/b.csv") == src.read_bytes()
    assert tree_digest(store, exclude_prefix="quarantine/") == before
    with pytest.raises(ValueError):
        quarantine_batch(store, "../models", [src], {}, None)


def test_cli_validate_exit_codes(tmp_path: Path, monkeypatch) -> None:
    from tailguard.cli import app

    monkeypatch.setenv("TAILGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TAILGUARD_STORE", "")
    ok, bad, contract = tmp_path / "ok.csv", tmp_path / "bad.csv", tmp_path / "contract.csv"
    good().to_csv(ok, index=False)
    df = good()
    df.loc[2, "price"] = -5
    df.to_csv(bad, index=False)
    df["label"] = df["label"].astype(object)
    df.loc[1, "label"] = "yes"
    df.to_csv(contract, index=False)
    runner = CliRunner()
    passed = runner.invoke(app, ["validate", "--data", str(ok)])
    assert passed.exit_code == 0 and "OK, 200 rows" in passed.output
    refused = runner.invoke(
        app, ["validate", "--data", str(bad), "--quarantine", "--json", str(tmp_path / "r.json")]
    )
    assert refused.exit_code == 2 and "rule 'price_non_negative'" in refused.output
    assert "quarantined at" in refused.output
    assert json.loads((tmp_path / "r.json").read_text())["failures"][0]["rule"] == "price_non_negative"
    stopped = runner.invoke(app, ["validate", "--data", str(contract)])
    assert stopped.exit_code == 2 and "column 'label'" in stopped.output and "label_binary" in stopped.output
