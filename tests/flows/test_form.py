"""The run form the Prefect UI builds from the retrain flow's signature, and the outcomes a run shows.

The form's source is RetrainParams: names, types, defaults, descriptions, bounds and the `balance`
pattern must reach Prefect's parameter schema (what `prefect deploy` stores and the UI renders).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import ValidationError as SchemaError
from prefect.utilities.schema_tools import validate
from pydantic import ValidationError

from tailguard.demo import DemoConfig, generate_batches
from tailguard.pipeline import RetrainParams, params_error, review_prompt
from tailguard.registry import Registry
from tailguard.store import open_store

# What the UI renders and the server checks; position/title are Prefect's own additions.
COMPARED = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern")


def _flow_schema() -> dict:
    from tailguard_flows.retrain import retrain

    return parameter_schema(retrain).model_dump()


def test_flow_parameters_are_retrain_params_fields_with_their_rules_and_descriptions():
    flow_props = _flow_schema()["properties"]
    model = RetrainParams.model_json_schema()
    assert list(flow_props) == list(model["properties"])  # same names, same order
    assert _flow_schema()["required"] == model["required"] == ["data"]
    defaults = RetrainParams(data="x").model_dump()
    for name, want in model["properties"].items():
        got = flow_props[name]
        assert got.get("description") == want["description"] and want["description"], name
        for key in COMPARED:
            assert got.get(key) == want.get(key), (name, key)
        if name != "data":
            assert got["default"] == defaults[name], name  # dict fields: {} on both sides
    # The dict fields are plain objects: the UI shows a JSON editor for those (object-or-null: nothing).
    for name in ("balance_options", "train_options", "gate_overrides"):
        assert flow_props[name]["type"] == "object" and "anyOf" not in flow_props[name]
    assert flow_props["approval"]["enum"] == ["auto", "manual"]
    assert "0 (the default) means no cap" in flow_props["max_steps"]["description"]
    assert "0 (the default) picks" in flow_props["learning_rate"]["description"]
    assert "override" in flow_props["gate_overrides"]["description"]
    assert "Copy to new run" in flow_props["gate_overrides"]["description"]


def test_flow_signature_has_every_retrain_params_field_with_its_annotation_and_default():
    """Each flow parameter is the RetrainParams field of that name: same order, the same Python type and
    the same default (a dict field's default_factory gives {} on both sides), nothing more or less."""
    import inspect
    import typing

    from tailguard_flows.retrain import retrain

    signature = inspect.signature(retrain.fn)
    hints = typing.get_type_hints(retrain.fn)  # Annotated metadata stripped: the bare types
    fields = RetrainParams.model_fields
    assert list(signature.parameters) == list(fields)
    for name, field in fields.items():
        assert hints[name] == field.annotation, (name, hints[name], field.annotation)
        default = signature.parameters[name].default
        if field.is_required():
            assert default is inspect.Parameter.empty, name
        else:
            assert default == field.get_default(call_default_factory=True), name
            assert type(default) is type(field.get_default(call_default_factory=True)), name


@pytest.mark.parametrize(
    "spec",
    [
        "random_under",
        "popularity_cap,random_under",
        " augment , class_balanced ",
        "none",
        "stratified,augment",
    ],
)
def test_balance_field_accepts_comma_lists_of_known_strategies(spec):
    schema = _flow_schema()
    validate({"data": "s3://b/x.csv", "balance": spec}, schema, raise_on_error=True)
    assert RetrainParams(data="x", balance=spec).balance == spec


@pytest.mark.parametrize(
    "spec", ["random_under,bogus", "random_under;augment", "", "random_under,", "RANDOM_UNDER", "under"]
)
def test_balance_field_refuses_unknown_or_malformed_lists_in_the_form_and_in_the_flow(spec):
    schema = _flow_schema()  # the server checks a run created from the form against this (enforced)
    with pytest.raises(SchemaError, match="balance"):
        validate({"data": "s3://b/x.csv", "balance": spec}, schema, raise_on_error=True)
    with pytest.raises(ValidationError) as info:
        RetrainParams(data="x", balance=spec)
    message = params_error(info.value)
    assert message.startswith("balance=") and "\n" not in message
    assert "not an allowed value" in message and "random_under" in message


@pytest.mark.parametrize(
    ("params", "names", "rule"),
    [
        ({"balance_options": {"ratio": 0}}, ["balance / balance_options", "ratio=0"], "0 < ratio <= 1000"),
        ({"train_options": {"loss": "no_such_loss"}}, ["invalid train_options", "loss="], "weighted_bce"),
        ({"epochs": 0, "eval_fraction": 1.5}, ["epochs='0'", "eval_fraction='1.5'"], "less than 1"),
        ({"balance_options": {"ratio": "x" * 500}}, ["ratio="], "ratio"),
        ({"review_timeout_s": -5}, ["review_timeout_s='-5'"], "greater than or equal to 1"),
    ],
)
def test_bad_parameters_give_one_line_naming_each_field(params, names, rule):
    with pytest.raises(ValidationError) as info:
        RetrainParams(data="x", **params)
    message = params_error(info.value)
    assert "\n" not in message and "errors.pydantic.dev" not in message
    assert all(n in message for n in names) and rule in message, message
    assert len(message) < 700  # a 500-character value is cut, not echoed whole


def test_flow_refuses_bad_options_before_reading_the_batch_in_one_line(tailguard_home, tmp_path):
    from tailguard_flows.retrain import InvalidParameters, retrain

    with pytest.raises(InvalidParameters) as info:
        retrain(data=str(tmp_path / "never-read.csv"), balance_options={"ratio": 0, "cap_k": -1})
    message = str(info.value)
    assert message.startswith("invalid retrain parameters: balance / balance_options:")
    assert "ratio=0" in message and "cap_k=-1" in message and "\n" not in message


def test_review_prompt_leads_with_the_summary_verdict_and_links_the_artifact():
    from tailguard.gate import Decision
    from tailguard.summary import DO_NOT_PROMOTE, PROMOTE

    failing = Decision(
        promote=False,
        policy_is_default=True,
        checks=[{"name": "floor:overall:roc_auc", "verdict": "fail", "reason": ""}],
        reasons=["slice category:<img src=x onerror=alert(1)> [click](javascript:alert(1)) fell"],
    )
    text = review_prompt(failing, "v7", "http://127.0.0.1:4200/runs/flow-run/abc?tab=Artifacts")
    assert text.startswith(f"**{DO_NOT_PROMOTE}**: candidate v7 (0 passed, 1 failed, 0 skipped)")
    assert "[the 'candidate-review' artifact](http://127.0.0.1:4200/runs/flow-run/abc?tab=Artifacts)" in text
    assert "<img" not in text and "](javascript" not in text and "&lt;img" in text
    passing = Decision(
        promote=True,
        policy_is_default=True,
        checks=[{"name": "a", "verdict": "pass", "reason": ""}],
        reasons=[],
    )
    assert review_prompt(passing, "v8").startswith(f"**{PROMOTE}**: candidate v8")
    assert "](" not in review_prompt(passing, "v8")  # no link without a UI URL


# --- outcomes: a stale approval ends Refused, tags say what happened ------------------------------------


@pytest.fixture(scope="module")
def small_batch(tmp_path_factory):
    return generate_batches(DemoConfig(rows=1200, batches=1, seed=3), tmp_path_factory.mktemp("small"))[0]


def _paused_run(deadline_s: float = 300) -> tuple[UUID, list[str]]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName

    flt = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])))
    end = time.monotonic() + deadline_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            runs = client.read_flow_runs(flow_run_filter=flt)
            if runs:
                return runs[0].id, list(runs[0].tags)
            time.sleep(0.5)
    raise TimeoutError("no paused run")


def test_approval_after_production_moved_ends_refused_and_tags_the_outcome(tailguard_home, small_batch):
    """Run 1 stores v1. Run 2 pauses for review (judged against no production); meanwhile someone promotes
    v1 from the CLI. The reviewer approves run 2: the flip is refused, the run ends Failed named Refused."""
    from prefect import get_client
    from prefect.flow_runs import resume_flow_run
    from tailguard_flows.cli import app
    from tailguard_flows.retrain import PromotionRefused, retrain
    from typer.testing import CliRunner

    common = {"epochs": 1, "n_bootstrap": 0, "window_weeks": 1, "allow_duplicate_batch": True}
    first = retrain(data=str(small_batch), **common)
    assert first["promoted"] is False  # nothing to judge against: approval=auto never ships a first model
    registry = Registry(open_store(str(tailguard_home / "store")), "relevance")
    seen: dict = {}

    def reviewer() -> None:
        run_id, tags = _paused_run()
        seen["tags"] = tags
        seen["reviews"] = CliRunner().invoke(app, ["reviews"]).output  # what a reviewer lists
        seen["run_id"] = run_id
        # Meanwhile a concurrent CLI promotion of run 1's candidate moves production.
        registry.promote(first["version"], approved_by="bo", decision=first["decision"], override=True,
                             comment="hotfix from the CLI", source="cli")  # fmt: skip
        resume_flow_run(run_id, run_input={"approve": True, "reviewer": "ana", "override": True,
                                           "comment": "reviewed the tail slices"})  # fmt: skip

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    state = retrain(data=str(small_batch), approval="manual", return_state=True, **common)
    thread.join(timeout=60)
    assert "awaiting-review" in seen["tags"] and any(t.startswith("verdict:") for t in seen["tags"])
    assert state.is_failed() and state.name == "Refused", (state.name, state.message)
    assert "production moved" in state.message
    with pytest.raises(PromotionRefused) as info:
        state.result()
    outcome = info.value.outcome
    assert outcome["state"] == "Refused" and outcome["promoted"] is False
    assert seen["tags"].count(f"candidate:{outcome['version']}") == 1
    (line,) = seen["reviews"].splitlines()
    assert line.startswith(str(seen["run_id"])) and f"candidate {outcome['version']}" in line
    assert line.rsplit("verdict ", 1)[1] in ("promote", "needs-review", "do-not-promote")
    assert registry.production()["version"] == first["version"]  # the CLI promotion stands
    assert (
        registry.audit()[-1]["action"] == "refuse" and registry.audit()[-1]["version"] == outcome["version"]
    )
    with get_client(sync_client=True) as client:
        tags = client.read_flow_run(state.state_details.flow_run_id).tags
    assert "outcome:refused" in tags and "awaiting-review" not in tags


# --- notifications and the list of runs awaiting review ------------------------------------------------

AUTOMATIONS = sorted((Path(__file__).parents[2] / "infra" / "automations").glob("*.json"))


@pytest.mark.parametrize("path", AUTOMATIONS, ids=lambda p: p.name)
def test_automation_files_are_valid_prefect_automations_on_retrain_runs(path):
    from tailguard_tasks.operations import load_automation

    block = "3f2b8c1e-2f4a-4c55-9b43-0a1d2e3f4a5b"
    automation = load_automation(path, block)
    assert automation.trigger.match_related.get("prefect.resource.name") in ("retrain", ["retrain"])
    assert str(automation.actions[0].block_document_id) == block
    expected = set(automation.trigger.expect)
    failed = {f"prefect.flow-run.{name}" for name in ("Failed", "Crashed", "Refused")}
    assert expected in ({"prefect.flow-run.Paused"}, failed)


def test_automations_command_replaces_by_name_and_refuses_a_bad_block_id(tmp_path):
    from prefect import get_client
    from tailguard_flows.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    block = "3f2b8c1e-2f4a-4c55-9b43-0a1d2e3f4a5b"
    for _ in range(2):  # a second `make deploy` must not duplicate them
        done = runner.invoke(app, ["automations", "--block-id", block])
        assert done.exit_code == 0, done.output
    with get_client(sync_client=True) as client:
        names = [a.name for a in client.read_automations() if a.name.startswith("tailguard:")]
    assert sorted(names) == [
        "tailguard: retrain run awaiting review",
        "tailguard: retrain run failed or refused",
    ]
    bad = runner.invoke(app, ["automations", "--block-id", "slack/ops"])
    assert bad.exit_code == 2 and "not a block document id" in bad.output
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x", "trigger": {"type": "event", "within": -1}, "actions": []}')
    bad = runner.invoke(app, ["automations", "--block-id", block, "--folder", str(tmp_path)])
    assert bad.exit_code == 2 and "broken.json" in bad.output and "Traceback" not in bad.output


def test_reviews_command_says_when_nothing_waits():
    from tailguard_flows.cli import app
    from typer.testing import CliRunner

    done = CliRunner().invoke(app, ["reviews"])
    assert done.exit_code == 0 and "no retrain run is waiting for review" in done.output
