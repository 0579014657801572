"""The CPU weight sync's group (StoreBroadcastGroup): a member that joins late still joins, the
tensors arrive whole, and once joined a transfer waits vLLM's 300 s, not the join's 1800 s."""
import threading
import time
from datetime import timedelta

import torch

from prpo_openrlhf.testing.net import free_port
from prpo_openrlhf.trainer.cpu_device import JOIN_TIMEOUT_S, TRANSFER_TIMEOUT_S, StoreBroadcastGroup


def test_a_late_member_joins_and_receives_the_tensor():
    port = free_port()
    got, groups = {}, {}

    def member(rank, delay_s):
        time.sleep(delay_s)
        group = StoreBroadcastGroup.create("127.0.0.1", port, rank, 2)
        groups[rank] = group
        t = torch.arange(6.0).reshape(2, 3) if rank == 0 else torch.zeros(2, 3)
        group.broadcast(t, src=0)
        got[rank] = t

    threads = [threading.Thread(target=member, args=(0, 0.0)), threading.Thread(target=member, args=(1, 2.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert torch.equal(got[1], torch.arange(6.0).reshape(2, 3)) and torch.equal(got[0], got[1])
    assert JOIN_TIMEOUT_S > 300
    assert all(g.group.store.timeout == timedelta(seconds=TRANSFER_TIMEOUT_S) for g in groups.values())
