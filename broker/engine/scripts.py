"""The Lua scripts: read once from ``lua/`` beside this module, each with the helpers it uses.

A script file holds one transition; the helper files (``notice.lua``: append and publish the
live notice; ``run.lua``: what the run transitions share; ``stream.lua``: what the Durable
Streams writes share) define local functions that go in front of the scripts that call them.
The one thing that differs between a single Redis and a cluster is the publish command
(``SPUBLISH`` keeps a notice on its conversation's shard), set in the first line as
``PUBLISH``. redis-py's ``Script`` runs each by its SHA and loads it again after a restart.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

# The helpers each script needs, in the order they are defined.
HELPERS: dict[str, tuple[str, ...]] = {
    "accept": ("notice",),
    "start": ("notice",),
    "take_over": (),
    "append": ("notice",),
    "finish": ("notice", "run"),
    "cancel": ("notice", "run"),
    "delete": (),
    "admit": (),
    "enqueue": (),
    "withdraw": (),
    "forget": (),
    "renew": (),
    "release": (),
    "stream_create": ("notice", "stream"),
    "stream_append": ("notice", "stream"),
    "stream_delete": ("notice",),
    "stream_add_fork": (),
    "stream_stage": (),
    "stream_uid": (),
    "ds_admit": (),
    "ds_refund": (),
    "subscription_put": ("subscription",),
    "subscription_link": ("subscription",),
    "subscription_unlink": ("subscription",),
    "subscription_delete": ("subscription",),
    "subscription_issue": ("subscription",),
    "subscription_sent": ("subscription",),
    "subscription_claim": ("subscription",),
    "subscription_ack": ("subscription",),
    "subscription_take": (),
    "subscription_settle": (),
}


def source(name: str, *, cluster: bool) -> str:
    """The text of script ``name`` as it runs: the publish command, its helpers, itself."""
    folder = resources.files("broker.engine").joinpath("lua")
    publish = "SPUBLISH" if cluster else "PUBLISH"
    parts = [f"local PUBLISH = '{publish}'"]
    parts += [folder.joinpath(f"{part}.lua").read_text() for part in (*HELPERS[name], name)]
    return "\n".join(parts)


class Scripts:
    """Every script, registered on one client (a single Redis or a cluster)."""

    def __init__(self, client: Any, *, cluster: bool) -> None:
        loaded = {name: client.register_script(source(name, cluster=cluster)) for name in HELPERS}
        self.accept = loaded["accept"]
        self.start = loaded["start"]
        self.take_over = loaded["take_over"]
        self.append = loaded["append"]
        self.finish = loaded["finish"]
        self.cancel = loaded["cancel"]
        self.delete = loaded["delete"]
        self.admit = loaded["admit"]
        self.enqueue = loaded["enqueue"]
        self.withdraw = loaded["withdraw"]
        self.forget = loaded["forget"]
        self.renew = loaded["renew"]
        self.release = loaded["release"]
        self.stream_create = loaded["stream_create"]
        self.stream_append = loaded["stream_append"]
        self.stream_delete = loaded["stream_delete"]
        self.stream_add_fork = loaded["stream_add_fork"]
        self.stream_stage = loaded["stream_stage"]
        self.stream_uid = loaded["stream_uid"]
        self.ds_admit = loaded["ds_admit"]
        self.ds_refund = loaded["ds_refund"]
        self.subscription_put = loaded["subscription_put"]
        self.subscription_link = loaded["subscription_link"]
        self.subscription_unlink = loaded["subscription_unlink"]
        self.subscription_delete = loaded["subscription_delete"]
        self.subscription_issue = loaded["subscription_issue"]
        self.subscription_sent = loaded["subscription_sent"]
        self.subscription_claim = loaded["subscription_claim"]
        self.subscription_ack = loaded["subscription_ack"]
        self.subscription_take = loaded["subscription_take"]
        self.subscription_settle = loaded["subscription_settle"]
