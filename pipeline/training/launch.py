"""More than one training process: the train stage re-runs itself under torchrun.

`dvc repro` runs `python -m kfusion.stages.train`. When params ask for more than one process
(`train.nproc_per_node` > 1 or `train.nnodes` > 1) and this process is not already one of
torchrun's (torchrun sets WORLD_SIZE), the stage launches

    python -m torch.distributed.run --standalone --nproc_per_node N -m kfusion.stages.train ...

(`torch.distributed.run` is torchrun, found in any environment with torch), waits for it and
exits with its status, so DVC records the stage as for one process. The training processes
find their rank in torchrun's environment (kfusion.pipeline.training.loop.setup_distributed);
resuming after a kill works as with one process (the resume state holds every rank's RNG).

Several nodes (`train.nnodes` > 1): the nodes meet at `scale.rdzv_endpoint` (c10d rendezvous).
Inside a SLURM allocation (SLURM_JOB_ID set) the stage starts one torchrun per node with
`srun`, so the one stage command trains on every node and blocks until all end; elsewhere it
starts this node's torchrun and prints the command each other node must run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from kfusion.config import Config

RDZV_PORT = 29500   # torchrun's default master port


def wants_torchrun(cfg: Config) -> bool:
    """More than one process asked for, and this is not one of torchrun's workers."""
    return (cfg.train.nproc_per_node > 1 or cfg.train.nnodes > 1) and "WORLD_SIZE" not in os.environ


def torchrun_command(cfg: Config, params: str | Path, *, slurm: bool = False) -> list[str]:
    """The command that runs the train stage in nnodes x nproc_per_node processes."""
    stage = ["-m", "kfusion.stages.train", "--params", str(params)]
    run = [sys.executable, "-m", "torch.distributed.run",
           f"--nproc_per_node={cfg.train.nproc_per_node}"]
    if cfg.train.nnodes == 1:   # a free port on this host, no rendezvous to configure
        return [*run, "--standalone", *stage]
    endpoint = cfg.scale.rdzv_endpoint or f"{_this_host()}:{RDZV_PORT}"
    run += [f"--nnodes={cfg.train.nnodes}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={endpoint}", f"--rdzv_id=kfusion-{os.environ.get('SLURM_JOB_ID', 'train')}"]
    if slurm:   # one task per node; each runs torchrun, which starts that node's processes
        return ["srun", f"--nodes={cfg.train.nnodes}", "--ntasks-per-node=1", *run, *stage]
    return [*run, *stage]


def _this_host() -> str:
    import socket
    return socket.gethostname()


def run_torchrun(cfg: Config, params: str | Path) -> int:
    """Launch the training processes, wait for them; their exit status. SIGTERM (a timeout,
    `scancel`) is passed on to torchrun, which stops its processes."""
    slurm = cfg.train.nnodes > 1 and "SLURM_JOB_ID" in os.environ
    cmd = torchrun_command(cfg, params, slurm=slurm)
    if cfg.train.nnodes > 1 and not slurm:
        print(f"[train] waiting for {cfg.train.nnodes - 1} more node(s); on each run, in this "
              f"checkout:\n  {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    old = signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:   # Ctrl-C reached torchrun too (one process group): let it stop
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
