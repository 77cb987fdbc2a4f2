"""Store schema upgrades that need the API's codecs (wiring: this layer may import protobuf).

Schema 1 stored schedules as conveyor.v1.Schedule protobuf messages; schema 2
stores the store's own record (store/schedule_record.py), so that an API change
cannot change the on-disk format. Schema 3 keeps task counts per (queue, state);
the upgrade from 2 counts the records once. Schema 4 adds concurrency keys (nothing to
rewrite). The LMDB store runs these in one transaction
when it opens an older data directory.
"""

from __future__ import annotations

from conveyor_server.rpc.schedule_codec import decode_schedule
from conveyor_server.store import keys, schedule_record
from conveyor_server.store.base import KvTxn
from conveyor_server.store.kv_txn import rebuild_queue_counts
from conveyor_server.store.lmdb_store import Upgrade


def schedules_to_store_records(kv: KvTxn) -> None:
    """Schema 1 -> 2: re-encode every schedule record; due entries are unchanged."""
    prefix = keys.SCHEDULE_PREFIX
    for key, value in kv.scan("schedules", prefix, bytes([prefix[0] + 1]), 1 << 62):
        kv.put("schedules", key, schedule_record.encode(decode_schedule(value)))


def add_concurrency_keys(kv: KvTxn) -> None:
    """Schema 3 -> 4: nothing to rewrite. No task of schema 3 has a concurrency key, so the
    new `keyed` and `keyleased` databases start empty; the version bump keeps a broker that
    does not know keys from opening a store that holds them."""


#: Upgrades by the schema version they start from.
LMDB_UPGRADES: dict[int, Upgrade] = {
    1: schedules_to_store_records,
    2: rebuild_queue_counts,
    3: add_concurrency_keys,
}
