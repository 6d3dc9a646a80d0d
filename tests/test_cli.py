"""The command line: exit codes, messages without tracebacks, light start-up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import toy_plugin

from deepscope.cli import main
from deepscope.plugins import set_host
from deepscope.testing import make_host

PIPELINE = """
[run]
name = "cli"
seed = 0
[data]
use = "tiny"
[model]
use = "tiny-mlp"
[[stage]]
do = "train"
use = "sgd"
epochs = 1
"""


@pytest.fixture
def toy_host():
    host = make_host(toy_plugin)
    set_host(host)
    yield host
    set_host(None)


def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_help_does_not_import_torch():
    code = ("import sys\nfrom deepscope.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('light')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("light")


@pytest.mark.parametrize("argv", [["validate", "QUICKSTART"], ["list"], ["plugins"], ["show", "attack", "pgd"],
                                  ["validate", "BROKEN"]])
def test_inspecting_commands_import_neither_torch_nor_mlflow(argv, tmp_path):
    """Every installed plugin is loaded (strict), yet nothing heavy is imported."""
    from deepscope.cli import QUICKSTART

    broken = write(tmp_path, "[run]\nname='x'\n")
    expected_rc = 2 if "BROKEN" in argv else 0
    argv = [str(QUICKSTART) if a == "QUICKSTART" else str(broken) if a == "BROKEN" else a for a in argv]
    code = ("import sys\nfrom deepscope.cli import main\n"
            f"rc = main({argv!r})\n"
            "heavy = sorted(m for m in ('torch', 'mlflow') if m in sys.modules)\n"
            "print('rc', rc, 'heavy', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"rc {expected_rc} heavy []", out.stderr


def test_run_succeeds_with_exit_0(toy_host, tmp_path, tmp_mlflow, capsys):
    assert main(["run", str(write(tmp_path, PIPELINE))]) == 0
    captured = capsys.readouterr()
    assert "train/sgd/loss" in captured.out and "FINISHED" in captured.out
    assert "Tracked in" in captured.err and "train/sgd/loss" not in captured.err


def test_bad_config_exits_2_without_traceback(toy_host, tmp_path, capsys):
    path = write(tmp_path, PIPELINE.replace("epochs = 1", "epochs = 0"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: $.stage[0].epochs: must be > 0 (got 0)" in " ".join(err.split())
    assert "Traceback" not in err


def test_syntax_error_exits_2(toy_host, tmp_path, capsys):
    path = write(tmp_path, "[run\n")
    assert main(["run", str(path)]) == 2
    assert f"{path}:1:" in capsys.readouterr().err


def test_failing_run_exits_1(toy_host, tmp_path, tmp_mlflow, capsys):
    path = write(tmp_path, PIPELINE + '[[stage]]\ndo = "probe"\nuse = "raise"\n')
    assert main(["run", str(path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "run failed: RuntimeError: probe exploded" in err and "marked FAILED" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(toy_host, tmp_path):
    path = write(tmp_path, PIPELINE.replace("epochs = 1", "epochs = 0"))
    with pytest.raises(Exception, match="epochs"):
        main(["--debug", "validate", str(path)])


def test_list_show_and_plugins(toy_host, capsys):
    assert main(["list", "trainers"]) == 0
    out = capsys.readouterr().out
    assert "sgd" in out and "toy_plugin" in out
    assert main(["show", "trainer", "sgd"]) == 0
    out = capsys.readouterr().out
    assert "epochs" in out and "learning rate" in out and "0.1" in out
    assert main(["show", "attack", "shift"]) == 0
    out = capsys.readouterr().out
    assert "n_examples" in out and "draws" in out  # inherited from AttackConfig
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "toy_plugin" in out and "trainer: sgd" in out


def test_plugins_json_lists_components(toy_host, capsys):
    import json

    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    toy = next(p for p in data if p["name"] == "toy_plugin")
    assert toy["components"]["attack"] == ["shift"]


def test_unknown_kind_or_name_exits_2(toy_host, capsys):
    assert main(["show", "widget", "x"]) == 2
    assert "unknown component kind 'widget'" in capsys.readouterr().err
    assert main(["show", "trainer", "sdg"]) == 2
    assert "Did you mean 'sgd'?" in capsys.readouterr().err


def test_deepscope_console_script_exit_code(tmp_path):
    path = write(tmp_path, "[run]\nname = 1\n")
    script = Path(sys.executable).with_name("deepscope")
    out = subprocess.run([str(script), "validate", str(path)], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "DEEPSCOPE_STRICT_PLUGINS": "1"})
    assert out.returncode == 2, out.stderr
    assert "$.run.name: expected a string, got int 1" in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr


def test_ui_serves_the_local_store_on_loopback(monkeypatch, tmp_path, capsys):
    import subprocess as sp

    calls = []

    class Server:
        def __init__(self, cmd, **options):
            calls.append((cmd, options))

        def wait(self):
            return 0

    monkeypatch.setattr(sp, "Popen", Server)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["ui", "--port", "5123"]) == 0
    ((cmd, options),) = [c for c in calls if c[0][1:4] == ["-m", "mlflow", "ui"]]
    assert cmd[1:4] == ["-m", "mlflow", "ui"] and options["start_new_session"] is True
    assert options["env"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5123"


MALFORMED = {
    "syntax": ("[run\n", ":1:"),
    "wrong type": (PIPELINE.replace("epochs = 1", 'epochs = "one"'), "$.stage[0].epochs: expected an integer"),
    "unknown key": (PIPELINE.replace("epochs = 1", "epochz = 1"), "$.stage[0].epochz: unknown key"),
    "unknown component": (PIPELINE.replace('use = "sgd"', 'use = "sgdd"'), "$.stage[0].use: unknown trainer 'sgdd'"),
    "missing seed": (PIPELINE.replace("seed = 0", ""), "$.run.seed: required key missing"),
    "out of range": (PIPELINE.replace("epochs = 1", "epochs = -2"), "$.stage[0].epochs: must be > 0 (got -2)"),
    "needs an earlier stage": (PIPELINE + '[[stage]]\ndo = "evaluate"\nuse = "synth"\n',
                               "$.stage[1]: probe 'synth' needs synthetic"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_every_malformed_pipeline_exits_2_naming_file_and_path(case, command, toy_host, tmp_path, tmp_mlflow,
                                                             capsys):
    text, expected = MALFORMED[case]
    path = write(tmp_path, text)
    assert main([command, str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}" in err and expected in err
    assert "Traceback" not in err


SWEEP = PIPELINE + """
[sweep]
executor = "{executor}"
[sweep.grid]
"stage.0.epochs" = [1, 2]
"""


def test_validate_checks_every_sweep_point(toy_host, tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, SWEEP.format(executor="inline")))]) == 0
    assert "sweep of 2 points" in capsys.readouterr().out
    path = write(tmp_path, SWEEP.format(executor="lcoal"), name="bad.toml")
    assert main(["validate", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}: $.sweep.executor" in err and "lcoal" in err


def test_validate_prints_one_unwrapped_line_however_long_the_path(toy_host, tmp_path, capsys):
    deep = tmp_path / ("a-directory-with-a-long-name-" * 3) / "and-another-one-below-it"
    deep.mkdir(parents=True)
    path = write(deep, PIPELINE, name="a-pipeline-file-with-a-long-name-too.toml")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert len(str(path)) > 100 and out.startswith(f"ok {path}: ") and out.count("\n") == 1


def test_run_refuses_a_sweep_file(toy_host, tmp_path, tmp_mlflow, capsys):
    path = write(tmp_path, SWEEP.format(executor="inline"))
    assert main(["run", str(path)]) == 2
    assert "run it with `deepscope sweep" in " ".join(capsys.readouterr().err.split())


def test_unreachable_tracking_store_is_a_user_error(toy_host, tmp_path, capsys):
    path = write(tmp_path, PIPELINE.replace('seed = 0', 'seed = 0\ntracking_uri = "bogus://nowhere"'))
    assert main(["run", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot open the MLflow store 'bogus://nowhere'" in err and "Traceback" not in err


def test_sigterm_ends_the_run_killed_with_its_metrics(tmp_path, tmp_mlflow):
    import os
    import signal
    import time

    from mlflow.tracking import MlflowClient

    path = write(tmp_path, PIPELINE + '[[stage]]\ndo = "probe"\nuse = "raise"\nerror = "sleep"\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "DEEPSCOPE_PLUGINS_MODULES": "toy_plugin"}
    proc = subprocess.Popen([sys.executable, "-m", "deepscope.cli", "run", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "probe sleeping" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    client = MlflowClient(tmp_mlflow)
    (run,) = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
    assert run.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/sgd/loss")] == [1]
