"""Uniform sampling and enumeration of a space's discrete architectures.

The set sampled is exactly the one :func:`essdsl.lang.stats.architecture_count`
counts: per mixed node, ``keep`` distinct candidate edges among those with a
non-zero op, one non-``zero`` op for each kept edge, and one combiner; the
space is the product of its mixed nodes.  Each architecture has a *rank* in
``[0, count)``: the mixed-radix number whose digits are the nodes' choice
ranks (in the graph's topological order), and a node's rank is unranked into
its choice with the same elementary symmetric polynomials stats counts with.
Sampling draws ranks with ``random.Random(seed).randrange(count)`` (exact for
any size, stable across Python versions), so it is uniform over the counted
set and reproducible by seed; ``--all`` walks the ranks in order.

A sample is a :class:`essdsl.nas.derive.NodeChoice` per mixed node, written by
:func:`essdsl.nas.derive.genotype_text`, the function that writes a searched
genotype, so a sampled genotype is the same kind of file as a derived one.
Uniformity is over choice vectors, as stats counts them: when the genotype
writer drops nodes that a choice leaves unused, two choice vectors can give
the same text, and such a genotype is drawn proportionally more often.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from essdsl.nas.derive import DeriveError, KeptEdge, NodeChoice, genotype_text
from essdsl.lang.graph import CellGraph, MixedSpec
from essdsl.lang.stats import ZERO, architecture_count, elementary_symmetric, node_architectures, nonzero_op_counts
from essdsl.errors import EssdslError

# `--all` refuses spaces with more architectures than this: each one is a file.
ENUMERATE_LIMIT = 10_000


class SampleError(EssdslError):
    """The space cannot be sampled as asked (no choices, too large to enumerate, …)."""


def _edge_ops(spec: MixedSpec, index: int) -> list[str]:
    return [op for op in spec.edges[index].ops if op != ZERO]


def node_choice(spec: MixedSpec, rank: int) -> NodeChoice:
    """The choice of rank ``rank`` (``0 <= rank < node_architectures(spec)``) of one mixed node.

    The combiner is the fastest-changing digit; the edges are unranked left
    to right: with ``k`` edges still to keep, the choices that keep edge ``i``
    number ``n_i · e_{k-1}(n_{i+1}, …)`` and those that skip it ``e_k(n_{i+1}, …)``.
    """
    total = node_architectures(spec)
    if not 0 <= rank < total:
        raise ValueError(f"rank {rank} out of range for node '{spec.name}' ({total} choices)")
    rank, combine_index = divmod(rank, len(spec.combine))
    counts = nonzero_op_counts(spec)
    kept, left = [], spec.keep
    for i, n in enumerate(counts):
        if left == 0:
            break
        rest = counts[i + 1 :]
        with_i = n * elementary_symmetric(rest, left - 1)
        if rank < with_i:
            op_index, rank = divmod(rank, elementary_symmetric(rest, left - 1))
            kept.append(KeptEdge(i, spec.edges[i].label, _edge_ops(spec, i)[op_index], 1.0))
            left -= 1
        else:
            rank -= with_i
    edges = tuple(kept) if spec.has_op_choice else None
    combine = spec.combine[combine_index] if spec.has_combine_choice else None
    return NodeChoice(spec.name, edges, combine, 1.0 if combine is not None else None)


def architecture_choices(graph: CellGraph, rank: int) -> dict[str, NodeChoice]:
    """Node name -> choice for the architecture of rank ``rank`` (mixed radix over the mixed nodes)."""
    choices = {}
    for spec in reversed(graph.mixed_nodes()):
        rank, digit = divmod(rank, node_architectures(spec))
        choices[spec.name] = node_choice(spec, digit)
    if rank:
        raise ValueError("rank out of range for the space")
    return {spec.name: choices[spec.name] for spec in graph.mixed_nodes()}


@dataclass(frozen=True)
class Sample:
    index: int  # position in the drawn sequence (0-based)
    rank: int  # the architecture's rank in [0, count)
    text: str  # the genotype's source


def sample_ranks(count: int, n: int, seed: int) -> list[int]:
    """``n`` independent uniform ranks in ``[0, count)`` (with replacement: draws are i.i.d.)."""
    rng = random.Random(seed)
    return [rng.randrange(count) for _ in range(n)]


def genotype_of_rank(graph: CellGraph, rank: int, provenance: dict, name: str) -> str:
    try:
        return genotype_text(graph.space, architecture_choices(graph, rank), provenance, name)
    except DeriveError as exc:  # e.g. a node only a dropped candidate read, before derive prunes such nodes
        raise SampleError(f"architecture {rank} of '{graph.name}' is not a valid genotype: {exc}") from None


def _check_sampleable(graph: CellGraph) -> int:
    count = architecture_count(graph)
    if not graph.mixed_nodes() or count <= 1:
        raise SampleError(f"'{graph.name}' has no choices left (a genotype?): there is nothing to sample")
    return count


def _provenance(space_path: str, space_sha256: str, seed: Optional[int], index: int, rank: int, count: int) -> dict:
    prov = {"source": space_path, "sha256": space_sha256}
    if seed is not None:
        prov["seed"] = seed
    # The rank may exceed 64 bits: written as text so no reader rounds it.
    prov.update(index=index, rank=str(rank), architectures=str(count))
    return prov


def draw(graph: CellGraph, space_path: str, space_sha256: str, n: int, seed: int) -> Iterator[Sample]:
    """``n`` uniformly drawn genotypes of the space, with their provenance."""
    count = _check_sampleable(graph)
    for index, rank in enumerate(sample_ranks(count, n, seed)):
        name = f"{graph.name}_sample{seed}_{index}"
        yield Sample(index, rank, genotype_of_rank(graph, rank, _provenance(space_path, space_sha256, seed, index, rank, count), name))


def enumerate_all(graph: CellGraph, space_path: str, space_sha256: str, limit: int = ENUMERATE_LIMIT) -> Iterator[Sample]:
    """Every architecture of a small space, in rank order; refuses more than ``limit``."""
    count = _check_sampleable(graph)
    if count > limit:
        raise SampleError(f"'{graph.name}' has {count:,} architectures, more than the {limit:,} that --all enumerates; draw a sample with -n instead")
    for rank in range(count):
        name = f"{graph.name}_arch{rank}"
        yield Sample(rank, rank, genotype_of_rank(graph, rank, _provenance(space_path, space_sha256, None, rank, rank, count), name))


def sample_file_name(graph_name: str, sample: Sample, seed: Optional[int]) -> str:
    if seed is None:
        return f"{graph_name}-arch{sample.rank:0{len(str(sample.rank))}d}.space"
    return f"{graph_name}-seed{seed}-{sample.index:03d}.space"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = [
    "ENUMERATE_LIMIT",
    "Sample",
    "SampleError",
    "architecture_choices",
    "draw",
    "enumerate_all",
    "genotype_of_rank",
    "node_choice",
    "sample_file_name",
    "sample_ranks",
    "sha256_of",
]
