"""The lazy command table matches what the command modules register."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click

from loops.cli import main


def test_every_registered_command_is_in_the_table_with_its_module():
    registered: dict[str, str] = {}
    for module in main.COMMAND_MODULES:
        group = click.Group()
        importlib.import_module(module).register(group)
        for name in group.commands:
            registered[name] = module  # a later module wins a name, as the table says
    assert registered == main.COMMANDS


def test_a_command_imports_only_its_own_module():
    code = (
        "import sys\n"
        "from loops.cli import main\n"
        "main.load_command('list')\n"
        "heavy = [m for m in ('fastapi', 'loops.flow.agent_job', 'loops.worker.runner',"
        " 'textual') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
