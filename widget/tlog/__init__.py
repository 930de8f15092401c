"""The transparency log's pure parts: Merkle tree (``tree``), signed notes and checkpoints
(``note``) and the log's entry rules (``entries``).

Nothing here imports Flask or Redis: the server's sealer, ``undersign verify`` and the tests
use these modules as they are.
"""
