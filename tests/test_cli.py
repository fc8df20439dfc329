"""The `hub` command line: list, run, train, eval; errors exit 2 with a message, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from hub.cli import app

from conftest import REPO, tiny_registry, write_registry

runner = CliRunner()


def test_list_and_run(trained_registry):
    listed = runner.invoke(app, ["list", "--registry", str(trained_registry)])
    assert listed.exit_code == 0 and "paraphrase" in listed.output and "regression" in listed.output
    single = runner.invoke(app, ["run", "sentiment", "good movie", "--registry", str(trained_registry)])
    assert single.exit_code == 0
    assert json.loads(single.stdout)["task"] == "sentiment"
    pair = runner.invoke(app, ["run", "similarity", "the book", "a book", "-r", str(trained_registry)])
    assert isinstance(json.loads(pair.stdout)["value"], float)


def test_errors_exit_2_with_message(trained_registry):
    result = runner.invoke(app, ["run", "sentimnt", "good", "--registry", str(trained_registry)])
    assert result.exit_code == 2
    assert "Did you mean 'sentiment'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["run", "paraphrase", "one text only", "--registry", str(trained_registry)])
    assert result.exit_code == 2 and "takes a pair" in result.output


def test_train_and_eval(tmp_path, tiny_backbone_dir):
    path = write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir))
    trained = runner.invoke(app, ["train", "sentiment", "--registry", str(path), "--epochs", "1", "--max-eval-examples", "20"])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "adapters" / "sentiment" / "head.safetensors").is_file()
    evaluated = runner.invoke(app, ["eval", "sentiment", "--registry", str(path), "--max-eval-examples", "20"])
    assert evaluated.exit_code == 0
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["examples"] == 20


def test_python_dash_m_hub_works():
    result = subprocess.run([sys.executable, "-m", "hub", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "train" in result.stdout
