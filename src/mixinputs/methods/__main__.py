"""``python -m mixinputs.methods [PAGE ...]``: rewrite the generated tables of the docs pages
(default: README.md and docs/methods.md) from the method registry."""

import sys
from pathlib import Path

from mixinputs.methods import write_tables

for page in sys.argv[1:] or ["README.md", "docs/methods.md"]:
    path = Path(page)
    path.write_text(write_tables(path.read_text()))
