"""``python -m widget``: the ``undersign`` command line (``undersign serve`` starts its mail
worker this way)."""

from .cli import main

main()
