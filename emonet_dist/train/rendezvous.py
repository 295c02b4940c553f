"""The torch.distributed rendezvous of a Ray Train run, listening on the node's Ray address only.

Ray Train's torch backend (Ray 2.60) lets rank 0 create torch's ``TCPStore``, and torch binds that store's server to
every interface: it has no bind-address setting. On a laptop or a shared login node that exposes an
unauthenticated key-value store to the network for the whole run.

Here rank 0 opens the listening socket itself, on the address Ray uses for the node (``127.0.0.1`` for the local
instance ``emonet`` starts, the node IP on a cluster, where the other nodes must reach it), and hands it to
``TCPStore`` (``master_listen_fd``). Every rank, rank 0 included, then joins it as a client through torch's own
``env://`` rendezvous with ``TORCHELASTIC_USE_AGENT_STORE`` (the path torchrun's agent uses when it hosts the store).
The rest is Ray's: the backend per device, the env vars torch needs, ``init_process_group`` on every worker with
the configured timeout.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend

_STORE: list = []
"""Rank 0's store, referenced for the life of the worker process (the store serves while the object lives)."""


def start_store(timeout_s: float) -> tuple[str, int]:
    """On rank 0: a ``TCPStore`` server listening on this node's Ray address only; returns ``(address, port)``."""
    import ray
    import torch.distributed as dist

    addr = ray.util.get_node_ip_address()
    sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((addr, 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    # the store owns the socket from here on; wait_for_workers=False: the ranks join in init_process_group
    _STORE.append(dist.TCPStore(addr, port, is_master=True, timeout=timedelta(seconds=timeout_s),
                                wait_for_workers=False, master_listen_fd=sock.detach()))
    return addr, port


def join_store(addr: str, port: int) -> None:
    """On every rank: rendezvous through the store rank 0 started, as a client."""
    os.environ.update(MASTER_ADDR=addr, MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE=str(True))


class _LocalStoreBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        import ray

        addr, port = worker_group.execute_single(0, start_store, timeout_s=backend_config.timeout_s)
        worker_group.execute(join_store, addr=addr, port=port)
        worker_group.execute(_set_torch_distributed_env_vars)  # LOCAL_RANK, RANK, WORLD_SIZE... as Ray sets them
        ray.get([worker_group.execute_single_async(i, _setup_torch_process_group, backend=backend_config.backend,
                                                   world_rank=i, world_size=len(worker_group), init_method="env://",
                                                   timeout_s=backend_config.timeout_s)
                 for i in range(len(worker_group))])

    def on_shutdown(self, worker_group, backend_config) -> None:
        super().on_shutdown(worker_group, backend_config)
        worker_group.execute(_STORE.clear)


class RendezvousConfig(TorchConfig):
    """``TorchConfig`` whose process group meets at a store bound to the node's Ray address (see module doc).
    ``backend`` must be given (``gloo`` or ``nccl``): the run's config chooses it."""

    @property
    def backend_cls(self):
        return _LocalStoreBackend
