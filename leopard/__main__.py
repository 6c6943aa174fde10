"""``python -m leopard``: the same as the ``leopard`` command."""

from leopard.cli import main

main()
