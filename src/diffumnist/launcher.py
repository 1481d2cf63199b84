"""`--nproc N`: start N ranks of a `diffumnist` command on this machine through torchrun.

It calls torchrun's own launcher (`torch.distributed.run`) in-process rather than a
subprocess, to turn its failures into one line. That uses torchrun internals
(`parse_args`, `run`, the elastic error types), which can change between torch releases:
tests/system/test_distributed.py pins the torch version this was checked against
(`CHECKED_WITH_TORCH`): a new torch release fails that test until someone has re-read them.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence

from diffumnist.config import ConfigError

CHECKED_WITH_TORCH = "2.14"  # major.minor whose torchrun internals `launch` was checked against


def launched_by_torchrun() -> bool:
    """True when torchrun (or `--nproc`) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class WorkerFailed(RuntimeError):
    """A rank of a `--nproc` launch exited with an error (its own message is above)."""

    def __init__(self, rank: int, exit_code: int) -> None:
        if exit_code < 0:
            what = f"rank {rank} was killed by signal {-exit_code}"
        else:
            what = f"rank {rank} exited with code {exit_code}; its message is above"
        super().__init__(what)
        self.rank, self.exit_code = rank, exit_code


def launch(nproc: int, argv: Sequence[str]) -> None:
    """Run `python -m diffumnist ARGV` as `nproc` ranks on this machine through torchrun.

    Each rank gets an equal share of the CPU cores as its thread count unless
    OMP_NUM_THREADS is set (too many threads per rank makes CPU training crawl).
    torchrun's own log lines are silenced: a failing rank prints its one-line error itself,
    and the failure is raised here as WorkerFailed with the first failing rank's exit code.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer; got {nproc}")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    launch_args = parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "diffumnist"])
    # given after parsing: torchrun's parser would take e.g. --nproc for its own options
    launch_args.training_script_args = list(argv)
    try:
        run(launch_args)
    except ChildFailedError as exc:
        # the cause, not the ranks torchrun stopped (SIGTERM) because of it
        rank, failure = min(
            exc.failures.items(),
            key=lambda item: (item[1].exitcode == -signal.SIGTERM, item[1].timestamp, item[0]),
        )
        raise WorkerFailed(rank, failure.exitcode) from None
    except SignalException:  # Ctrl-C: torchrun has stopped the ranks
        raise KeyboardInterrupt from None
