"""cwtool's distributed path on one GPU: DistributedDataParallel over NCCL, the distributed sampler, the barriers and
rank 0 writing the run directory, with one process.

torchrun with one process normally takes cwtool's single-process path, and two processes need two GPUs (each takes
the GPU of its LOCAL_RANK). This joins a one-process group instead, so that NCCL and DistributedDataParallel run where
one GPU is lent; with --device cpu it joins gloo. Each wrap into DistributedDataParallel is said on stderr.

    python -m torch.distributed.run --standalone --nproc-per-node 1 reproduce/nccl_one_rank.py compress MODEL --data digits ...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch.nn.parallel

    from toolchain import distributed
    from toolchain.cli import main as cwtool

    if "WORLD_SIZE" not in os.environ:
        sys.exit("run this under torchrun (python -m torch.distributed.run --nproc-per-node 1 ...)")
    distributed._torchrun_env = lambda: (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    wrap = torch.nn.parallel.DistributedDataParallel.__init__

    def said(self, module, *args, **kwargs):
        wrap(self, module, *args, **kwargs)
        group = distributed.current()
        print(f"DistributedDataParallel: {group.backend}, {group.world} process(es), device_ids {kwargs.get('device_ids')}, "
              f"weights on {next(module.parameters()).device}", file=sys.stderr, flush=True)

    torch.nn.parallel.DistributedDataParallel.__init__ = said
    cwtool(sys.argv[1:])


if __name__ == "__main__":
    main()
