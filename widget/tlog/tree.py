"""RFC 6962 / RFC 9162 Merkle trees as pure functions: hashes, roots, proofs, checks.

Vocabulary:

* A **node** ``(level, index)`` names the *complete* (perfect) subtree of ``2**level``
  leaves covering ``[index << level, (index + 1) << level)``. Its hash never changes once
  the tree has that many leaves, so a store can keep it forever.
* The **frontier** of a tree of size ``n`` is the list of nodes whose ranges, left to right,
  tile ``[0, n)``: one per set bit of ``n``, largest first. The root is their right fold.
* Every hash in an RFC 9162 proof is the hash of a subtree ``[start, end)`` of the tree,
  either complete or on the tree's right edge. A right-edge subtree is rebuilt from the
  complete nodes tiling it (``subtree_nodes``), so a store needs complete nodes only.

Proof generation takes ``get(level, index) -> bytes`` returning a stored node hash, plus
``*_nodes`` helpers listing which nodes a proof will ask for, so a store can read them all in
one batch first (see ``Layout`` for a store that keeps only some levels).

The checks raise ``ProofError`` with a message saying what did not hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "GetNode",
    "Layout",
    "Node",
    "NodeHash",
    "ProofError",
    "Span",
    "append_leaves",
    "consistency_proof",
    "consistency_proof_nodes",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "root_nodes",
    "split_point",
    "subtree_hash",
    "subtree_nodes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256

Node = tuple[int, int]
"""``(level, index)``: the complete subtree over leaves ``[index << level, (index+1) << level)``."""

GetNode = Callable[[int, int], bytes]
"""``get(level, index)`` returns the hash of a complete subtree the tree already holds."""


NodeHash = tuple[int, int, bytes]
"""``(level, index, hash)``: a complete node and its hash, as ``append_leaves`` reports them."""


class ProofError(ValueError):
    """A proof, a hash or a tree size does not check out."""


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 section 2.1.1: ``SHA-256(0x00 || leaf)``."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 section 2.1.1: ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): where MTH splits ``n`` leaves."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves has no split")
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves with these leaf hashes, level by level (fast: no recursion).

    Pairing neighbours level by level and carrying an odd last node up unchanged builds
    exactly RFC 9162's tree (its split is at the largest power of two below ``n``).
    """
    level = list(hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        carry = level.pop() if len(level) % 2 else None
        pairs = iter(level)
        level = [_sha256(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs, strict=True)]
        if carry is not None:
            level.append(carry)
    return level[0]


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold of a tiling's hashes, largest (leftmost) first: the subtree's MTH."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def subtree_nodes(start: int, end: int) -> list[Node]:
    """The complete nodes tiling ``[start, end)``, left to right (largest first).

    ``[start, end)`` must be a subtree of some RFC 9162 tree: ``start`` is a multiple of the
    smallest power of two ``>= end - start``. A complete subtree gives one node.
    """
    width = end - start
    if start < 0 or width < 1:
        raise ValueError(f"[{start}, {end}) is not a subtree")
    if start % (1 << (width - 1).bit_length()):
        raise ValueError(f"[{start}, {end}) is not aligned as a subtree")
    nodes: list[Node] = []
    pos = start
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            nodes.append((level, pos >> level))
            pos += 1 << level
    return nodes


def subtree_hash(start: int, end: int, get: GetNode) -> bytes:
    """MTH of leaves ``[start, end)``, complete or not, from the complete nodes tiling it."""
    return _fold([get(level, index) for level, index in subtree_nodes(start, end)])


def root_nodes(size: int) -> list[Node]:
    """The nodes ``root(size, get)`` reads: the frontier of ``size`` (none for an empty tree)."""
    _check_size(size)
    return subtree_nodes(0, size) if size else []


def root(size: int, get: GetNode) -> bytes:
    """MTH of the first ``size`` leaves (RFC 9162 section 2.1.1)."""
    return subtree_hash(0, size, get) if _check_size(size) else EMPTY_ROOT


def _check_size(size: int) -> int:
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    return size


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtrees whose hashes make PATH(index, D[0:size]) (RFC 9162 2.1.3.1), leaf first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + split_point(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def _consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The subtrees whose hashes make PROOF(old, D[0:new]) (RFC 9162 2.1.4.1), in order."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old in (0, new):
        return []
    siblings: list[tuple[int, int]] = []
    lo, hi, m, whole = 0, new, old, True
    # SUBPROOF(m, D[lo:hi], whole) until m covers the whole subtree.
    while m != hi - lo:
        k = split_point(hi - lo)
        if m <= k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    siblings.reverse()
    return siblings if whole else [(lo, hi), *siblings]


def _nodes_of(ranges: Iterable[tuple[int, int]]) -> list[Node]:
    return [node for start, end in ranges for node in subtree_nodes(start, end)]


def inclusion_proof_nodes(index: int, size: int) -> list[Node]:
    """Every node ``inclusion_proof(index, size, get)`` reads (fetch them in one batch)."""
    return _nodes_of(_inclusion_ranges(index, size))


def consistency_proof_nodes(old: int, new: int) -> list[Node]:
    """Every node ``consistency_proof(old, new, get)`` reads (fetch them in one batch)."""
    return _nodes_of(_consistency_ranges(old, new))


def inclusion_proof(index: int, size: int, get: GetNode) -> list[bytes]:
    """The RFC 9162 inclusion proof (audit path) of leaf ``index`` in the tree of ``size``."""
    return [subtree_hash(start, end, get) for start, end in _inclusion_ranges(index, size)]


def consistency_proof(old: int, new: int, get: GetNode) -> list[bytes]:
    """The RFC 9162 consistency proof from the tree of size ``old`` to that of size ``new``.

    Empty when ``old`` is 0 or equal to ``new`` (nothing to prove).
    """
    return [subtree_hash(start, end, get) for start, end in _consistency_ranges(old, new)]


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root ``proof`` implies for ``leaf`` (a leaf hash) at ``index``: RFC 9162 2.1.3.2."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _check_hash(leaf, "the leaf hash")
    fn, sn, r = index, size - 1, leaf
    for i, p in enumerate(proof):
        _check_hash(p, f"inclusion proof hash {i}")
        if sn == 0:
            raise ProofError(f"the inclusion proof is too long ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"the inclusion proof is too short ({len(proof)} hashes)")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check that the leaf with hash ``leaf`` is at ``index`` in the tree ``(size, root_hash)``."""
    _check_hash(root_hash, "the root hash")
    if root_from_inclusion_proof(index, size, leaf, proof) != root_hash:
        raise ProofError(f"the inclusion proof of leaf {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that ``(new_size, new_root)`` extends ``(old_size, old_root)``: RFC 9162 2.1.4.2."""
    _check_hash(old_root, "the old root hash")
    _check_hash(new_root, "the new root hash")
    if old_size < 0 or new_size < old_size:
        raise ProofError(f"tree size went from {old_size} to {new_size}: a log never shrinks")
    if old_size == new_size or old_size == 0:
        if proof:
            raise ProofError("the consistency proof should be empty")
        if old_size == new_size and old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    for i, p in enumerate(proof):
        _check_hash(p, f"consistency proof hash {i}")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old tree is a node of the new one
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"the consistency proof is too long ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"the consistency proof is too short ({len(proof)} hashes)")
    if fr != old_root:
        raise ProofError(f"the consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise ProofError(f"the consistency proof does not lead to the new root (size {new_size})")


@dataclass(frozen=True)
class Frontier:
    """The right edge of a tree: the hashes of its frontier nodes, largest first.

    Enough to append leaves and to compute this size's root; ``nodes()`` says which stored
    nodes they are, so a store can keep only the nodes and ``load`` the frontier back.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.hashes) != self.size.bit_count():
            raise ValueError(f"a frontier of size {self.size} has {self.size.bit_count()} hashes")
        for h in self.hashes:
            _check_hash(h, "a frontier hash")

    def nodes(self) -> list[Node]:
        return root_nodes(self.size)

    def root(self) -> bytes:
        return _fold(self.hashes) if self.hashes else EMPTY_ROOT

    @classmethod
    def load(cls, size: int, get: GetNode) -> Frontier:
        return cls(size, tuple(get(level, index) for level, index in root_nodes(size)))


def append_leaves(
    frontier: Frontier, leaf_hashes: Iterable[bytes]
) -> tuple[Frontier, list[NodeHash]]:
    """Append leaves (given as leaf hashes) to the tree whose right edge is ``frontier``.

    Returns the new frontier and every complete node the new leaves complete, in creation
    order (each leaf, then the nodes it closes, bottom up); a store keeps those it stores
    (``Layout.keep``). Node indexes are global, so stores can append level by level.
    """
    stack = list(frontier.hashes)
    size = frontier.size
    created: list[NodeHash] = []
    for h in leaf_hashes:
        _check_hash(h, "a leaf hash")
        created.append((0, size, h))
        n, level = size, 0
        while n & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            n >>= 1
            level += 1
            created.append((level, n, h))
        stack.append(h)
        size += 1
    return Frontier(size, tuple(stack)), created


class Span(NamedTuple):
    """``length`` consecutive stored hashes of level ``level``, from index ``start``."""

    level: int
    start: int
    length: int


@dataclass(frozen=True)
class Layout:
    """Which levels a store keeps: every ``stride``-th level (0, stride, 2*stride, ...).

    A node of another level is rebuilt from the ``2 ** (level % stride)`` stored hashes
    under it. Hash bytes per leaf and stored hashes one proof reads (one batch), measured:

    ====== ============== ========================== ===========================
    stride bytes per leaf proof, 10**6 leaves (runs) proof, 10**7 leaves (runs)
    ====== ============== ========================== ===========================
    1      64.0           <= 26 (25)                 <= 31 (30)
    4      34.1           <= 85 (12)                 <= 115 (15)
    8      32.1           <= 655 (7)                 <= 940 (7)
    ====== ============== ========================== ===========================

    The default, 4, costs 2 bytes per leaf more than the leaf hashes alone and keeps a
    proof's read under 4 KB. Keep each stored level as one Redis string of 32-byte hashes in
    index order: APPEND adds to it, one GETRANGE reads a ``Span``, and nothing is spent on
    per-entry overhead.
    """

    stride: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.stride <= 32:
            raise ValueError(f"stride {self.stride} is not between 1 and 32")

    def stores(self, level: int) -> bool:
        return level % self.stride == 0

    @property
    def bytes_per_leaf(self) -> float:
        """Hash bytes stored per leaf, for a large tree."""
        return HASH_SIZE * sum(2.0 ** -(k * self.stride) for k in range(64 // self.stride + 1))

    def keep(self, created: Iterable[NodeHash]) -> list[NodeHash]:
        """The nodes of ``created`` that this layout stores."""
        return [node for node in created if node[0] % self.stride == 0]

    def spans(self, nodes: Iterable[Node]) -> list[Span]:
        """The stored hashes to read for ``nodes``, as merged runs (one read each, one batch)."""
        wanted: dict[int, list[tuple[int, int]]] = {}
        for level, index in nodes:
            base = level - level % self.stride
            shift = level - base
            wanted.setdefault(base, []).append((index << shift, (index + 1) << shift))
        spans: list[Span] = []
        for base in sorted(wanted):
            runs = sorted(wanted[base])
            start, end = runs[0]
            for s, e in runs[1:]:
                if s <= end:
                    end = max(end, e)
                else:
                    spans.append(Span(base, start, end - start))
                    start, end = s, e
            spans.append(Span(base, start, end - start))
        return spans

    def getter(self, spans: Sequence[Span], blobs: Sequence[bytes]) -> GetNode:
        """A ``get(level, index)`` over what was read: ``blobs[i]`` holds ``spans[i]``'s hashes.

        Each blob is the span's hashes concatenated (32 bytes each, in index order), as one
        GETRANGE of a string holding a level returns them. Rebuilt nodes are cached.
        """
        if len(spans) != len(blobs):
            raise ValueError(f"{len(spans)} spans but {len(blobs)} blobs")
        stored: dict[Node, bytes] = {}
        for span, blob in zip(spans, blobs, strict=True):
            if len(blob) != span.length * HASH_SIZE:
                raise LookupError(
                    f"stored level {span.level} from {span.start}: wanted {span.length} hashes,"
                    f" got {len(blob)} bytes"
                )
            for k in range(span.length):
                stored[(span.level, span.start + k)] = blob[k * HASH_SIZE : (k + 1) * HASH_SIZE]
        cache: dict[Node, bytes] = {}

        def get(level: int, index: int) -> bytes:
            node = (level, index)
            found = stored.get(node) or cache.get(node)
            if found is not None:
                return found
            base = level - level % self.stride
            shift = level - base
            try:
                run = [stored[(base, i)] for i in range(index << shift, (index + 1) << shift)]
            except KeyError:
                raise LookupError(f"node {node} was not read (ask Layout.spans for it)") from None
            cache[node] = root_from_leaf_hashes(run)
            return cache[node]

        return get
