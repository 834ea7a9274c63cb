"""The CLI's options come from the pydantic configs: one source of names, defaults and help text."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from tailguard.balance import BalanceConfig
from tailguard.model import TrainConfig
from tailguard.options import field_default, kebab, option_kind
from tailguard.pipeline import RetrainParams


def _command(name: str):
    from tailguard_flows.cli import app

    return typer.main.get_command(app).commands[name]


def _options(name: str) -> dict:
    return {p.name: p for p in _command(name).params}


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Run `tailguard retrain` up to the flow call; the flow's keyword arguments land in the dict."""
    import tailguard_flows.cli as flows_cli

    seen: dict = {}

    def fake_run(**params):
        seen.update(params)
        return {"promoted": False, "decision": {}, "paths": {}}

    monkeypatch.setattr(flows_cli, "run_retrain", fake_run)
    monkeypatch.setattr("tailguard.summary.outcome_text", lambda outcome: "ran")
    batch = tmp_path / "batch.csv"
    batch.write_text("query,item_id,item_title,label\ndrill,1,cordless drill,1\n")
    return seen, batch, flows_cli.app


def test_every_retrain_params_field_is_an_option_with_its_default(captured):
    seen, batch, app = captured
    options = _options("retrain")
    for name, info in RetrainParams.model_fields.items():
        assert name in options, f"RetrainParams.{name} has no `tailguard retrain` option"
        assert kebab(name) in options[name].opts
        assert (info.description or "").split()[0] in (options[name].help or "")
    done = CliRunner().invoke(app, ["retrain", "--data", str(batch)])
    assert done.exit_code == 0, done.output
    expected = {
        name: str(batch) if name == "data" else field_default(info)
        for name, info in RetrainParams.model_fields.items()
    }
    assert seen == expected


def test_literal_fields_offer_their_choices_and_old_spellings_still_work(captured):
    seen, batch, app = captured
    done = CliRunner().invoke(
        app,
        ["retrain", "--data", str(batch), "--bootstrap", "7", "--balance-option", "ratio=2.0",
         "--train-option", "loss=weighted_bce", "--gate-overrides", '{"floors": {"roc_auc": 0.6}}'],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert seen["n_bootstrap"] == 7 and seen["balance_options"] == {"ratio": 2.0}
    assert seen["train_options"] == {"loss": "weighted_bce"}
    assert seen["gate_overrides"] == {"floors": {"roc_auc": 0.6}}
    bad = CliRunner().invoke(app, ["retrain", "--data", str(batch), "--approval", "sometimes"])
    assert bad.exit_code == 2 and "sometimes" in bad.output and "'auto', 'manual'" in bad.output, bad.output


def test_config_file_fills_what_the_command_line_leaves_and_flags_win(captured, tmp_path):
    seen, batch, app = captured
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {batch}\nepochs: 5\nseed: 3\nbalance_options: {{ratio: 2.0}}\napproval: manual\n"
    )
    done = CliRunner().invoke(app, ["retrain", "--config", str(config), "--epochs", "7", "--seed", "0"])
    assert done.exit_code == 0, done.output
    assert seen["data"] == str(batch)  # from the file: the flag is not required when the file has it
    assert seen["epochs"] == 7 and seen["seed"] == 0  # given flags win, even one equal to the default
    assert seen["balance_options"] == {"ratio": 2.0} and seen["approval"] == "manual"  # from the file
    assert seen["max_steps"] == RetrainParams.model_fields["max_steps"].default  # neither: the default


def test_config_file_with_unknown_keys_is_refused_in_one_line(captured, tmp_path):
    seen, batch, app = captured
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {batch}\nepoch: 5\nlr: 0.1\n")
    done = CliRunner().invoke(app, ["retrain", "--config", str(config)])
    assert done.exit_code == 2 and seen == {}
    (line,) = done.output.strip().splitlines()
    assert "unknown key(s) epoch, lr" in line and str(config) in line and "Traceback" not in done.output


@pytest.mark.parametrize(
    ("text", "expected"), [("epochs: [1\n", "line 2"), ("- 1\n- 2\n", "expected a mapping")]
)
def test_config_file_that_is_not_a_mapping_is_refused_in_one_line(captured, tmp_path, text, expected):
    seen, batch, app = captured
    config = tmp_path / "run.yaml"
    config.write_text(text)
    done = CliRunner().invoke(app, ["retrain", "--data", str(batch), "--config", str(config)])
    assert done.exit_code == 2 and seen == {} and expected in done.output
    assert len(done.output.strip().splitlines()) == 1


def test_bad_values_are_one_line_naming_the_field_before_the_flow_starts(captured):
    seen, batch, app = captured
    done = CliRunner().invoke(app, ["retrain", "--data", str(batch), "--epochs", "0"])
    assert done.exit_code == 2 and seen == {} and "epochs='0'" in done.output and "equal to 1" in done.output
    missing = CliRunner().invoke(app, ["retrain"])
    assert missing.exit_code == 2 and "--data" in missing.output and seen == {}


@pytest.mark.parametrize(("command", "model", "skip"), [("balance", BalanceConfig, {"strategies"}),
                                                         ("train", TrainConfig, set())])  # fmt: skip
def test_balance_and_train_options_are_their_configs_fields(command, model, skip):
    options = _options(command)
    for name, info in model.model_fields.items():
        if name in skip or option_kind(info) != "scalar":
            continue  # lists and dicts go through --option KEY=JSON
        assert name in options and kebab(name) in options[name].opts[0], name
        assert options[name].default is None  # not given: the config's own default applies
        assert options[name].show_default == str(field_default(info))


def test_library_cli_never_flips_production_unlocked_when_a_prefect_server_is_configured(tmp_path):
    """`python -m tailguard.cli promote` has no Prefect lock: with PREFECT_API_URL set it refuses (exit 1,
    one line) instead of racing a flow's promotion; `tailguard` (tailguard_flows.cli) holds the lock."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "TAILGUARD_STORE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "tailguard.cli", "promote", "v1", "--by", "ana"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "promotion lock" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_recipe_never_overrides_a_flag_even_one_equal_to_the_default(captured):
    """`--recipe baseline --epochs 3` trains 3 epochs (3 is the default; baseline says 8); the fields left
    out take the recipe's values."""
    seen, batch, app = captured
    done = CliRunner().invoke(app, ["retrain", "--data", str(batch), "--recipe", "baseline", "--epochs", "3"])
    assert done.exit_code == 0, done.output
    assert seen["epochs"] == 3 and seen["recipe"] == "baseline"
    assert (seen["batch_size"], seen["learning_rate"]) == (128, 1e-4)  # not given: the recipe's
    assert seen["train_options"] == {"early_stopping_patience": 2}


def test_a_config_file_key_wins_over_the_recipe_too(captured, tmp_path):
    seen, batch, app = captured
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {batch}\nrecipe: baseline\nepochs: 3\nbatch_size: 32\nlearning_rate: 1e-3\n")
    done = CliRunner().invoke(app, ["retrain", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert (seen["epochs"], seen["batch_size"], seen["learning_rate"]) == (3, 32, 1e-3)  # PyYAML: "1e-3"
    assert seen["train_options"] == {"early_stopping_patience": 2}  # not in the file: the recipe's


def test_the_flow_keeps_the_flags_a_recipe_would_change(monkeypatch, tmp_path):
    """The flow re-validates its flat parameters without a validation context (RetrainParams(**values));
    run from `tailguard retrain`, it still keeps `--epochs 3` against the recipe's 8."""
    import tailguard_flows.cli as flows_cli
    import tailguard_flows.retrain as flow_module

    flown: dict = {}

    def fake_flow(**params):
        flown["params"] = RetrainParams(**params)  # what flows/retrain._checked does
        return {"promoted": False, "decision": {}, "paths": {}}

    monkeypatch.setattr(flows_cli, "_embedded_prefect", lambda: None)
    monkeypatch.setattr(flow_module, "retrain", fake_flow)
    monkeypatch.setattr("tailguard.summary.outcome_text", lambda outcome: "ran")
    batch = tmp_path / "batch.csv"
    batch.write_text("query,item_id,item_title,label\ndrill,1,cordless drill,1\n")
    args = ["retrain", "--data", str(batch), "--recipe", "baseline", "--epochs", "3"]
    done = CliRunner().invoke(flows_cli.app, args)
    assert done.exit_code == 0, done.output
    assert (flown["params"].epochs, flown["params"].batch_size) == (3, 128)
    # Outside that call (the deployment form) a value equal to the default is filled, as documented.
    form = RetrainParams(**flown["params"].model_dump())
    assert (form.epochs, form.batch_size) == (8, 128)


@pytest.mark.parametrize(
    ("line", "key", "expected", "shown"),
    [("data: 12", "data", "expected str", "got 12 (int)"),
     ("data: [a, b]", "data", "expected str", "got ['a', 'b'] (list)"),
     ("epochs: true", "epochs", "expected int", "got True (bool)"),
     ('allow_duplicate_batch: "yes"', "allow_duplicate_batch", "expected bool", "got 'yes' (str)")],
)  # fmt: skip
def test_config_values_of_the_wrong_type_are_refused_in_one_line(
    captured, tmp_path, line, key, expected, shown
):
    seen, batch, app = captured
    config = tmp_path / "run.yaml"
    config.write_text(f"{line}\n" if line.startswith("data") else f"data: {batch}\n{line}\n")
    done = CliRunner().invoke(app, ["retrain", "--config", str(config)])
    assert done.exit_code == 2 and seen == {} and "Traceback" not in done.output, done.output
    (message,) = done.output.strip().splitlines()
    assert str(config) in message and f"{key}: {expected}, {shown}" in message, message


def _fresh_env(tmp_path) -> dict:
    import os

    drop = ("TAILGUARD_HOME", "TAILGUARD_STORE", "PREFECT_HOME", "PREFECT_API_URL")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path / "home")}


def _tailguard(*args: str, cwd, env: dict, timeout: int):
    import subprocess
    import sys

    code = "import sys; from tailguard_flows.cli import main; sys.argv = ['tailguard', *sys.argv[1:]]; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_help_creates_nothing_and_reviews_works_in_a_fresh_folder(tmp_path):
    """`tailguard --help` leaves a fresh folder empty; `tailguard reviews` there makes its Prefect home and
    answers (an embedded server: ~17 s on 2 cores; without PREFECT_HOME it hung ~3 min and failed)."""
    folder = tmp_path / "fresh"
    folder.mkdir()
    env = _fresh_env(tmp_path)
    helped = _tailguard("--help", cwd=folder, env=env, timeout=120)
    assert helped.returncode == 0 and "reviews" in helped.stdout, helped.stderr
    assert list(folder.iterdir()) == []
    done = _tailguard("reviews", cwd=folder, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "no retrain run is waiting for review"
    assert (folder / ".tailguard" / "prefect").is_dir()
