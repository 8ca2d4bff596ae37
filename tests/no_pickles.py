"""``python tests/no_pickles.py ARGS`` is ``charrnn ARGS`` in a process whose torch.distributed
cannot exchange pickled objects: every object collective raises, and so does the function
torch unpickles a peer's bytes with. The multi-process tests start their ranks through it, so
they prove that ranks exchange only tensors (nothing from the network is unpickled).
"""

from __future__ import annotations

import sys

import torch.distributed as dist
from torch.distributed import distributed_c10d

OBJECT_COLLECTIVES = ("all_gather_object", "broadcast_object_list", "gather_object",
                      "scatter_object_list", "send_object_list", "recv_object_list")  # fmt: skip


class PickleExchanged(AssertionError):
    pass


def refuse(*args, **kwargs):
    raise PickleExchanged("a pickled object was about to be exchanged between the ranks")


def forbid_pickles(patch=setattr) -> None:
    """Make the object collectives raise (`patch`: setattr, or a test's monkeypatch.setattr)."""
    for module in (dist, distributed_c10d):
        for name in OBJECT_COLLECTIVES:
            if hasattr(module, name):
                patch(module, name, refuse)
    patch(distributed_c10d, "_tensor_to_object", refuse)  # where torch unpickles a peer's bytes


if __name__ == "__main__":
    forbid_pickles()
    from charrnn.cli import run

    sys.argv[0] = "charrnn"
    run()
