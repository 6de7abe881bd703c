"""python -m pinlife.cli: the `pinlife` command."""

from .main import main

main()
