"""``MPIComm``: the collectives over mpi4py, with variable counts (no padding).

One ``Reduce_scatter`` and one in-place ``Allgatherv`` per step, whatever the number of
blocks or tensors. GPU arrays go to MPI without host copies when the MPI library is
CUDA-aware (``cuda_aware=True``) and through a pinned host buffer otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..core.types import Array
from ..extras import require
from ._buffers import PinnedStaging, device_view, host_view, is_gpu
from ._exit import end_job_on_uncaught_exception
from .base import displacements


def _cuda_aware_default() -> bool:
    """``MLBFGS_CUDA_AWARE_MPI=1`` declares the MPI library CUDA-aware (default: not)."""
    return os.environ.get("MLBFGS_CUDA_AWARE_MPI", "0").lower() in ("1", "true", "yes")


class MPIComm:
    """Collectives over an mpi4py communicator (``MPI.COMM_WORLD`` by default).

    ``cuda_aware`` says whether GPU buffers may be handed to MPI directly; ``None`` reads
    the environment variable ``MLBFGS_CUDA_AWARE_MPI``. When false, GPU buffers are staged
    through pinned host memory (two device-host copies per collective).

    ``abort_on_exception`` (default) makes an uncaught exception on this rank print its
    traceback and then call ``MPI.COMM_WORLD.Abort(1)``, which ends every rank of the job
    within seconds instead of leaving them waiting in a collective, as
    ``python -m mpi4py`` does; pass ``False`` to keep Python's own handling.
    """

    def __init__(
        self, comm: Any = None, cuda_aware: bool | None = None, abort_on_exception: bool = True
    ) -> None:
        MPI: Any = require("mpi4py.MPI", "MPIComm")

        if abort_on_exception:
            end_job_on_uncaught_exception(
                "MPI.COMM_WORLD.Abort(1) ends the job", lambda: MPI.COMM_WORLD.Abort(1)
            )
        self._mpi = MPI
        self._comm = MPI.COMM_WORLD if comm is None else comm
        self.cuda_aware = _cuda_aware_default() if cuda_aware is None else bool(cuda_aware)
        self._staging: PinnedStaging | None = None
        self._datatypes: dict[str, Any] = {}

    @property
    def rank(self) -> int:
        return int(self._comm.Get_rank())

    @property
    def size(self) -> int:
        return int(self._comm.Get_size())

    def allgather_object(self, obj: Any) -> list[Any]:
        return list(self._comm.allgather(obj))

    def reduce_scatter(self, send: Array, recv: Array, counts: Sequence[int]) -> None:
        counts = [int(c) for c in counts]
        if is_gpu(send) and not self.cuda_aware:  # pragma: no cover - needs a GPU
            staging = self._stage()
            host_send = staging.to_host(send).copy()
            host_recv = staging.to_host(recv)
            self._comm.Reduce_scatter(host_send, host_recv, counts, op=self._mpi.SUM)
            staging.to_device(host_recv, recv)
            return
        wrap = device_view if is_gpu(send) else host_view
        self._comm.Reduce_scatter(wrap(send), wrap(recv), counts, op=self._mpi.SUM)

    def allgatherv(self, buffer: Array, counts: Sequence[int]) -> None:
        counts = [int(c) for c in counts]
        if is_gpu(buffer) and not self.cuda_aware:  # pragma: no cover - needs a GPU
            staging = self._stage()
            host = staging.to_host(buffer)
            self._allgatherv(host, counts)
            staging.to_device(host, buffer)
            return
        self._allgatherv(device_view(buffer) if is_gpu(buffer) else host_view(buffer), counts)

    def _allgatherv(self, buffer: Any, counts: list[int]) -> None:
        spec = [buffer, counts, displacements(counts), self._datatype(buffer.dtype)]
        self._comm.Allgatherv(self._mpi.IN_PLACE, spec)

    def _datatype(self, dtype: Any) -> Any:
        """The MPI datatype of ``dtype``, made once: ``from_numpy_dtype`` builds a new
        datatype at every call and never frees it (about 0.5 KB per step, measured by
        ``benchmarks/soak.py`` under ``mpiexec``)."""
        name = str(dtype).removeprefix("torch.")
        if name not in self._datatypes:
            from mpi4py.util.dtlib import from_numpy_dtype

            self._datatypes[name] = from_numpy_dtype(name)
        return self._datatypes[name]

    def _stage(self) -> PinnedStaging:  # pragma: no cover - needs a GPU
        if self._staging is None:
            self._staging = PinnedStaging()
        return self._staging
