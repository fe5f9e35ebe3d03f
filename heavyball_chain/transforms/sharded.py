"""Whole-tensor transforms on FSDP2-sharded parameters: each tensor is owned by one rank.

Elementwise transforms run on local shards. A transform that needs whole tensors (SOAP's
Kronecker factors) cannot: here every rank all-gathers the (sharded) updates, each tensor's
*owner* runs the transform on the whole tensor with the whole-tensor state it alone keeps, and the
owners broadcast the results, from which every rank keeps its own shard. Owners are assigned
greedily by cost (largest first, to the least-loaded rank), the same on every rank.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.distributed as dist

from ..core import Bucket

__all__ = ["owner_computes", "assign_owners"]


def _cost(shape: torch.Size) -> float:
    """Work of one SOAP step on a tensor: the cubic factor work plus the rotations."""
    dims = [d for d in shape if d > 1] or [1]
    return sum(d**3 for d in dims) + math.prod(dims) * sum(dims)


def assign_owners(shapes: list[torch.Size], world: int) -> list[int]:
    """Longest-processing-time-first assignment of tensors to ``world`` ranks."""
    load = [0.0] * world
    owners = [0] * len(shapes)
    for j in sorted(range(len(shapes)), key=lambda j: (-_cost(shapes[j]), j)):
        rank = min(range(world), key=lambda r: (load[r], r))
        owners[j] = rank
        load[rank] += _cost(shapes[j])
    return owners


def owner_computes(fn: Callable, updates: list[torch.Tensor], bucket: Bucket, init: Callable,
                   skips: Callable[[int], bool]) -> list | None:
    """Run ``fn(whole_updates, whole_bucket)`` with each tensor on its owner; return local shards.

    ``skips(step)`` says when ``fn`` returns None (no update): every rank must agree without
    asking, since a rank may own no tensor of the bucket."""
    from torch.distributed.tensor import DTensor, Replicate

    params: list[Any] = bucket.sharded or []  # DTensors (owner_computes runs only on sharded buckets)
    mesh = params[0].device_mesh
    if mesh.ndim != 1:
        raise NotImplementedError("whole-matrix transforms (SOAP, Muon, Adafactor) on sharded parameters support a 1-D "
                                  "device mesh (FSDP2 without HSDP)")
    group, rank, world = mesh.get_group(), mesh.get_local_rank(), mesh.size()
    whole = [
        DTensor.from_local(u, p.device_mesh, p.placements, shape=p.shape, stride=p.stride(), run_check=False)
        .full_tensor()
        for u, p in zip(updates, params)
    ]
    owners = assign_owners([p.shape for p in params], world)
    mine = [j for j, r in enumerate(owners) if r == rank]
    sub = Bucket(params=[whole[j] for j in mine], grads=[whole[j] for j in mine],
                 states=[bucket.states[j] for j in mine], group=bucket.group, step=bucket.step,
                 prefix=bucket.prefix, positions=[bucket.positions[j] for j in mine]
                 if bucket.positions is not None else None, hypers=bucket.hypers)
    init(sub)
    out_mine = fn([whole[j] for j in mine], sub) if mine else []
    if skips(bucket.step):
        return None
    results: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    for j, u in zip(mine, out_mine):
        results[j] = u
    for r in range(world):
        idx = [j for j, o in enumerate(owners) if o == r]
        if not idx:
            continue
        numel = [params[j].numel() for j in idx]
        if r == rank:
            flat = torch.cat([results[j].reshape(-1) for j in idx])
        else:
            flat = torch.empty(sum(numel), dtype=updates[0].dtype, device=updates[0].device)
        dist.broadcast(flat, src=dist.get_global_rank(group, r), group=group)
        for j, piece in zip(idx, flat.split(numel)):
            results[j] = piece.view(params[j].shape)
    return [
        DTensor.from_local(u, mesh, [Replicate()], run_check=False).redistribute(mesh, p.placements).to_local()
        for u, p in zip(results, params)
    ]
