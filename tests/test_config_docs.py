"""docs/commands.rst and docs/configuration.rst are generated from the declarations.

If this fails, run ``python -m scaler.config.docs`` and commit the result.
"""

import os
import subprocess
import sys

import pytest

from scaler.config.commands import ALL_COMMANDS
from scaler.config.docs import generated_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


@pytest.mark.parametrize("name", sorted(generated_files()))
def test_generated_docs_are_up_to_date(name):
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        committed = f.read()
    assert committed == generated_files()[name], \
        "docs/%s is out of date: run 'python -m scaler.config.docs' and commit the result" % name


def test_docs_name_every_command_flag_and_key():
    text = generated_files()["commands.rst"]
    for command in ALL_COMMANDS:
        assert command.prog in text
        for option in command.options():
            for flag in option.flags:
                assert "``%s``" % flag in text, flag
            for key in option.toml_keys:
                assert "``%s``" % key in text, key


def test_generator_check_mode(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = [sys.executable, "-m", "scaler.config.docs", "--output-dir", str(tmp_path)]
    stale = subprocess.run(run + ["--check"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert subprocess.run(run, capture_output=True, env=env, cwd=ROOT, timeout=60).returncode == 0
    fresh = subprocess.run(run + ["--check"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert fresh.returncode == 0, fresh.stderr
    for name, text in generated_files().items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text
