"""Worker for tests/distributed: run under torchrun (2 ranks, gloo). Not a test module.

argv: OUT_DIR RESULT_DIR CONFIG_JSON. Trains with the library API; rank r records the mask
checksum after every topology update and its final masks into RESULT_DIR/rank{r}.pt. Rank 1 is
given its own ``--out`` (OUT_DIR + "-rank1") so the test can check that it never writes there.
Then both ranks build engines with *different* seeds and ``check_consistency=True`` and record
whether the first update raised.
"""
import json
import os
import sys

import torch

from freetickets.sparse import SparseEngine
from freetickets.train.distributed import drain_collectives
from freetickets.train.config import merge, TrainConfig, validate
from freetickets.train.runner import train


def main() -> None:
    out, result_dir, cfg_json = sys.argv[1], sys.argv[2], sys.argv[3]
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    checksums: list[int] = []
    engines: list[SparseEngine] = []
    original_update = SparseEngine._update
    original_init = SparseEngine.__init__

    def recording_update(self, fraction):
        original_update(self, fraction)
        checksums.append(self.mask_checksum())

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        engines.append(self)

    SparseEngine._update = recording_update
    SparseEngine.__init__ = recording_init
    import torch.distributed as dist

    # The caller owns the process group (train() must then leave it alive); re-initialising a
    # destroyed default group under torchrun's store can hang, so initialise once.
    dist.init_process_group("gloo")
    cfg = validate(merge(TrainConfig(), json.loads(cfg_json), source="test"))
    train(cfg, out if rank == 0 else out + "-rank1")
    SparseEngine._update = original_update
    SparseEngine.__init__ = original_init
    masks = {k: v.clone() for k, v in engines[-1].masks.items()}

    # A deliberately inconsistent pair of engines: check_consistency must catch it on every rank.
    assert dist.is_initialized()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = SparseEngine(model, opt, sparsity=0.5, grow="random", seed=rank, check_consistency=True)
    try:
        engine.update_topology(0.5)
        raised = ""
    except RuntimeError as exc:
        raised = str(exc)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    same = SparseEngine(model, opt, sparsity=0.5, grow="random", seed=7, check_consistency=True)
    same.update_topology(0.5)  # identical on both ranks: must not raise
    # The caller owns the group, so it drains the collectives before teardown (see
    # drain_collectives: without it gloo aborts the process at exit in about 1 run in 10).
    drain_collectives()
    dist.destroy_process_group()
    torch.save({"checksums": checksums, "masks": masks, "raised": raised}, os.path.join(result_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main()
