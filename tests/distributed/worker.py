"""Runs in each of 2 gloo processes (CPU, 127.0.0.1): DDP and FSDP2 training of every preset,
distributed checkpoints, and the single-process references the runs are compared with (computed
here, in the same processes with the same thread count, not in the pytest process); rank 0 saves
everything to ``OUT/results.pt``. Launched by tests/test_distributed.py as
``python tests/distributed/worker.py OUT PORT``. A 2-rank torch.distributed.checkpoint save
needs numpy (torch's object collectives decode with it)."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402



COMPILED = ("ForeachAdamW", "ForeachSFAdamW", "PaLMForeachSOAP")


def full(model):
    return {n: (p.full_tensor() if isinstance(p, torch.distributed.tensor.DTensor) else p).detach().clone()
            for n, p in model.named_parameters()}


def references(name):
    """The single-process runs the tests compare with, computed here so that they run in the
    same kind of process, with the same thread count and kernels, as the distributed runs:
    ``reference`` is fed the ranks' averaged gradients (common.train_averaged), ``full_batch``
    trains on the whole batch (common.train); ``reference_eval`` is ``reference`` after
    ``opt.eval()`` (schedule-free presets)."""
    out = {}
    model = common.make_model()
    opt = common.make_opt(name, model)
    common.train_averaged(model, opt, common.STEPS, world=2)
    out["reference"] = full(model)
    if hasattr(opt, "eval"):
        opt.eval()
        out["reference_eval"] = full(model)
    model = common.make_model()
    opt = common.make_opt(name, model)
    common.train(model, opt, common.STEPS)
    out["full_batch"] = full(model)
    return out


def shard(model, mesh):
    for layer in (model.conv, model.fc1, model.fc2):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def run(rank: int, world: int, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (world,))
    results = {"ddp": {}, "fsdp": {}, "fsdp_bf16": {}, "fsdp_eval": {}, "dcp": {}, "soap_owned": {},
               "reference": {}, "reference_eval": {}, "full_batch": {}, "threads": torch.get_num_threads()}
    for name in common.NAMES:
        # DDP: replicated parameters, averaged gradients
        model = common.make_model()
        ddp = DDP(model)
        opt = common.make_opt(name, model)  # the DDP module's parameters
        common.train(ddp, opt, common.STEPS, rank, world)
        results["ddp"][name] = full(model)
        # FSDP2: parameters are DTensors sharded on dim 0
        model = shard(common.make_model(), mesh)
        opt = common.make_opt(name, model)
        common.train(model, opt, common.STEPS, rank, world)
        if hasattr(opt, "eval"):
            opt.eval()
            results["fsdp_eval"][name] = full(model)
            opt.train()
        results["fsdp"][name] = full(model)
        if name in COMPILED:  # compile=True on the local shards
            model = shard(common.make_model(), mesh)
            opt = common.make_opt(name, model, compile=True)
            common.train(model, opt, common.STEPS, rank, world)
            results.setdefault("fsdp_compiled", {})[name] = full(model)
        owned = sum(any("soap/" in k for k in opt.state[p]) for p in model.parameters())
        counts = [torch.zeros((), dtype=torch.int64) for _ in range(world)]
        dist.all_gather(counts, torch.tensor(owned, dtype=torch.int64))
        results["soap_owned"][name] = [int(c) for c in counts]
        # single-process references (both ranks compute them, so neither waits for the other)
        for key, value in references(name).items():
            results[key][name] = value
        if name not in common.STATE_KINDS:
            continue
        # bf16 sharded parameters: stochastic rounding on the local shards
        model = shard(common.make_model(torch.bfloat16), mesh)
        opt = common.make_opt(name, model)
        common.train(model, opt, common.STEPS, rank, world)
        results["fsdp_bf16"][name] = full(model)
        # distributed checkpoint: save after 3 steps, resume, compare with the uninterrupted run
        model = shard(common.make_model(), mesh)
        opt = common.make_opt(name, model)
        common.train(model, opt, 3, rank, world)
        path = os.path.join(out, f"ckpt-{name}")
        dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
                 checkpoint_id=path)
        common.train(model, opt, 3, rank, world, start=3)
        uninterrupted = full(model)
        model2 = shard(common.make_model(seed=7), mesh)
        opt2 = common.make_opt(name, model2)
        sd = {"model": get_model_state_dict(model2), "optim": get_optimizer_state_dict(model2, opt2)}
        dcp.load(sd, checkpoint_id=path)
        set_model_state_dict(model2, sd["model"])
        set_optimizer_state_dict(model2, opt2, sd["optim"])
        common.train(model2, opt2, 3, rank, world, start=3)
        results["dcp"][name] = (uninterrupted, full(model2))
    # float64 sharded parameters through the owner-computes path (SOAP): the owners broadcast their
    # results in the updates' dtype, not float32
    model = shard(common.make_model(torch.float64), mesh)
    common.train(model, common.make_opt("ForeachSOAP", model), common.STEPS, rank, world)
    results["fsdp_fp64_soap"] = full(model)
    model = common.make_model(torch.float64)
    common.train_averaged(model, common.make_opt("ForeachSOAP", model), common.STEPS, world=2)
    results["reference_fp64_soap"] = full(model)
    if rank == 0:
        torch.save(results, os.path.join(out, "results.pt"))
    dist.barrier()
    dist.destroy_process_group()
    end_process()


def end_process() -> None:
    """Exit without tearing down Python objects. A DDP model's Reducer can hold the last
    reference to the gloo process group; freeing it joins gloo's threads while holding the GIL,
    and one of them may be waiting for the GIL to free a finished work item: a deadlock in torch
    (seen here once in ~20 runs). Everything this process had to do is done and written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    out, port = sys.argv[1], int(sys.argv[2])
    torch.multiprocessing.spawn(run, args=(2, out, port), nprocs=2)
