"""`python -m alloy` runs the `alloy` command."""

from alloy.cli import main

main()
