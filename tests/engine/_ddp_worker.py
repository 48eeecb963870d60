"""2-process DDP worker for test_distributed.py (launched by torch.distributed.run, gloo/CPU).

Each rank trains the toy model on its own data (ToyLoader(seed=rank + 1)), then the ranks
compare parameters and run a sharded toy evaluation gathered with all_gather_object.
Rank 0 writes ``OUT_DIR/result.pt``.

Usage: python -m torch.distributed.run --nproc_per_node=2 --standalone _ddp_worker.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from _engine_toy import ToyLoader, ToyModel, toy_eval_process, toy_eval_summarize

from instseg.engine import distributed as du
from instseg.engine.checkpoint import Checkpointer
from instseg.engine.optim import build_optimizer
from instseg.engine.trainer import Trainer, seed_everything

STEPS = 4
N_EVAL = 11


def main(out: Path) -> None:
    torch.set_num_threads(1)
    assert du.init_distributed()
    rank, world = du.get_rank(), du.get_world_size()
    seed_everything(0)
    model = ToyModel(dropout=0.0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    ddp = du.wrap_ddp(model)
    opt = build_optimizer(model, name="sgd", lr=0.05, weight_decay=0.0)
    seed_everything(100 + rank)  # per-rank RNG streams: saved per rank in the checkpoint
    trainer = Trainer(
        model=ddp,
        optimizer=opt,
        data_loader=ToyLoader(seed=rank + 1),
        max_iters=STEPS,
        amp="none",  # exact comparison with the single process below
        checkpointer=Checkpointer(ddp, optimizer=opt, save_dir=out / "ckpt"),
        log_period=1,
        out_dir=out,
    )
    trainer.train()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = du.all_gather_object(flat)
    parts = du.all_gather_object(toy_eval_process(du.unwrap_model(ddp), range(rank, N_EVAL, world)))
    if du.is_main_process():
        merged: dict[int, float] = {}
        for part in parts:
            merged.update(part)
        result = {
            "world": world,
            "init": init,
            "final": model.state_dict(),
            "max_rank_diff": max(float((g - flat).abs().max()) for g in gathered),
            "n_gathered": len(gathered),
            "eval": toy_eval_summarize(merged),
        }
        torch.save(result, out / "result.pt")
    du.barrier()
    du.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
