"""`python -m tbxsweep` is the `tbxsweep` command."""

from __future__ import annotations

from tbxsweep.cli import main

main()
