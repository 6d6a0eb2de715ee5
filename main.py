"""`python main.py [flags]` is `catdog run [flags]`: train what is missing, then write the figures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))   # works without installing

from catdog.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
