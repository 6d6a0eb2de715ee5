#!/usr/bin/env bash
# Rewrite docs/cli_help.txt from the CLI itself (a test checks that it is current).
set -euo pipefail
cd "$(dirname "$0")/.."
COLUMNS=100 .venv/bin/python -c "from catdog.cli import help_text; print(help_text(), end='')" > docs/cli_help.txt
