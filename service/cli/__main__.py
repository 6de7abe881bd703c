"""python -m pinlife.cli: the `pinlife` command."""

from pinlife.cli.main import main

main()
