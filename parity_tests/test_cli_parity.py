"""`reformer parity` on the command line: the table, the verdict and the exit status."""

import pytest

from reformer_cli.main import main as cli

from parity_tests.helpers import make_config


@pytest.mark.slow  # a new shape makes eager JAX compile every operation again: about 100 s on 2 cores
def test_parity_command_with_dropout(tmp_path, capsys):
    config = make_config(attention_layers=("lsh",), hidden_dropout=0.2, attention_dropout=0.2, ff_dropout=0.2)
    path = tmp_path / "config.json"
    config.save(path)
    assert cli(["parity", "--config", str(path), "--length", "16", "--dropout-seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "| layer 0 (lsh) |" in out
    assert "parity: PASS" in out


def test_parity_command_rejects_bad_dropout_seed(tmp_path, capsys):
    path = tmp_path / "config.json"
    make_config().save(path)
    assert cli(["parity", "--config", str(path), "--dropout-seed", "-3"]) == 2
    assert "--dropout-seed -3 is invalid" in capsys.readouterr().err
