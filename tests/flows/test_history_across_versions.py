"""Issue 16 item 4 on versions the flow wrote: the second run records the production version it was scored
against, so `models --compare` pairs the two on the same eval rows; `--trend` lists both in order."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tailguard.demo import DemoConfig, generate_batches
from tailguard.history import compare_versions, trend
from tailguard.registry import Registry
from tailguard.store import open_store


@pytest.fixture(scope="module")
def flow_versions(tmp_path_factory, module_home):
    """Two retrain runs in one store; the first (scored with no production) is production for the second."""
    from tailguard_flows.retrain import retrain

    weeks = generate_batches(DemoConfig(rows=1200, batches=2, seed=21), tmp_path_factory.mktemp("weeks"))
    with module_home(tmp_path_factory.mktemp("tg-history")) as home:
        first = retrain(data=str(weeks[0]), epochs=1, n_bootstrap=30, window_weeks=1)
        registry = Registry(open_store(str(home / "store")), "relevance")
        if not registry.production():  # a 1-epoch model may miss a floor: a named reviewer overrides
            decision = registry.manifest(first["version"])["decision"]
            registry.promote(first["version"], "ana", decision, override=True, comment="seed production")
        second = retrain(data=str(weeks[1]), epochs=1, n_bootstrap=30, seed=5, window_weeks=1)
    return registry, first["version"], second["version"]


def test_the_flow_records_what_it_compared_with_and_compare_pairs_them(flow_versions):
    registry, v1, v2 = flow_versions
    assert registry.read_manifest(v1).production_version is None  # nothing in production then
    assert registry.read_manifest(v2).production_version == v1
    c = compare_versions(registry, v1, v2)
    assert c.same_rows and c.source_version == v2
    headline = registry.read_manifest(v2).headline["overall/roc_auc"]
    overall = next(r for r in c.rows if (r.slice, r.metric) == ("overall", "roc_auc"))
    assert (overall.v1, overall.v2) == (headline["production"], headline["candidate"])
    assert overall.ci_low <= overall.diff <= overall.ci_high


def test_cli_trend_on_flow_versions(flow_versions):
    from tailguard.cli import app

    registry, v1, v2 = flow_versions
    result = CliRunner().invoke(app, ["models", "--trend", "--json", "--store", registry.store.uri])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["version"] for r in rows] == [v1, v2] == [r.version for r in trend(registry)]
    assert rows[0]["status"] in ("production", "promoted")
