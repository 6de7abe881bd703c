"""python -m service.cli: the `pinlife` command."""

from service.cli.main import main

main()
