"""`pinlife --version` (the installed package's metadata), what a client
command's start imports, and `pinlife completion SHELL` (shtab, from the
same parser): the bash script is run by bash, asked what follows what, as a
shell asks it on Tab. And the README's sample of `pinlife check` has the
keys the command prints."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pinlife.keys.ring import write_new_key_file
from tests.e2e.harness import ROOT, cli, cli_process

ENV = {k: v for k, v in os.environ.items() if not k.startswith("PINLIFE_")}


def test_version_is_the_installed_package_s():
    done = cli_process("--version", env=ENV)
    assert done.returncode == 0, done.stderr
    declared = tomllib.loads((Path(ROOT) / "pyproject.toml").read_text())["project"]["version"]
    assert done.stdout == f"pinlife {declared}\n" == f"pinlife {importlib.metadata.version('pinlife')}\n"


def test_a_client_command_imports_neither_rich_nor_the_package_metadata_nor_the_store():
    """A command that draws nothing and prints no version starts without
    them (runtime/heap.py, runtime/build.py): the real entry point, run to
    its exit (here a server that is not there), then what it imported."""
    code = (
        "import json, runpy, sys\n"
        "sys.argv = ['pinlife', 'status', 'card-1', '--server', '127.0.0.1:1']\n"
        "try:\n    runpy.run_module('pinlife.cli', run_name='__main__')\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(code, json.dumps(sorted(m for m, module in sys.modules.items() if module is not None)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    exit_code, _, modules = done.stdout.strip().partition(" ")
    assert exit_code not in ("", "0", "None"), done  # nobody answers on port 1
    imported = set(json.loads(modules))
    assert {"grpc", "structlog"} <= imported  # what the command does need
    assert {m for m in imported if m.split(".")[0] in ("rich", "sqlalchemy") or m == "importlib.metadata"} == set()


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh", "fish", "powershell"])
def test_completion_scripts_name_every_command(shell):
    done = cli("completion", shell, env=ENV)
    assert done.returncode == 0, done.stderr
    for word in ("serve", "enroll", "verify", "audit", "history", "watch", "stats", "completion", "server", "format", "after"):
        assert word in done.stdout, (shell, word)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_commands_subcommands_options_and_choices(tmp_path):
    script = tmp_path / "pinlife.bash"
    script.write_text(cli("completion", "bash", env=ENV).stdout)
    asked = [
        ["pinlife", ""],
        ["pinlife", "audit", "w"],
        ["pinlife", "audit", "watch", "--af"],
        ["pinlife", "verify", "card-1", "user_"],
        ["pinlife", "audit", "history", "card-1", "--format", ""],
    ]
    lines = [f"source {script}"]
    lines.append(
        'ask() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE="${COMP_WORDS[*]}"; '
        'COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _shtab_pinlife; echo "${COMPREPLY[*]}"; }'
    )
    lines += ["ask " + " ".join(f"'{w}'" for w in words) for words in asked]
    done = subprocess.run(["bash", "-c", "\n".join(lines)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    top, audit, option, pin_type, formats = done.stdout.splitlines()
    assert {"serve", "migrate", "enroll", "verify", "audit", "completion"} <= set(top.split())
    assert (audit, option, pin_type, formats) == ("watch", "--after", "user_certificate", "table jsonl csv")


def test_the_readme_check_sample_has_the_keys_pinlife_check_prints(databases, tmp_path):
    url = databases.create("sqlite")
    Path(url.removeprefix("sqlite:///")).chmod(0o600)
    key_file = tmp_path / "keys.json"
    write_new_key_file(key_file)
    key_file.chmod(0o600)
    env = {**ENV, "PINLIFE_DATABASE_URL": url, "PINLIFE_KEY_FILE": str(key_file)}
    done = cli("check", env=env)
    assert done.returncode == 0, done.stderr
    readme = (Path(ROOT) / "README.md").read_text()
    sample = readme.split("$ .venv/bin/pinlife check", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    assert list(json.loads(sample)) == list(json.loads(done.stdout))
