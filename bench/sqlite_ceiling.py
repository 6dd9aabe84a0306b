#!/usr/bin/env python3
"""SQLite's own ceiling for chatwarden's audit ingestion, with no parser and no driver.

The same 100,000 records as `cargo bench --bench ingest` (same JSON shape, 5,000 users, 200
external tenants), the same schema (migrations 0005 and 0006), the same pragmas (32 KiB pages, WAL, synchronous FULL,
16 MiB page cache, in-memory temporary store) and the same transactions of 5,000 records: each
transaction is two `INSERT OR IGNORE ... SELECT` statements that copy a batch of prepared rows
(the record text and its seven hashed lookup keys, sorted) from in-memory staging tables. The
time measured is SQLite's B-tree, WAL and fsync work alone; everything chatwarden adds (parsing,
key hashing, binding through sqlx) is left out, so chatwarden's rate can only be lower.

    python3 bench/sqlite_ceiling.py [records] [records per transaction] [page size]

The page size defaults to chatwarden's (32 KiB, set on new databases in `store::Store::connect`);
4096 shows SQLite's default.

Python's sqlite3 module links the system SQLite (printed), not the one bundled into chatwarden.
"""

import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import time

TENANT = "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e"


def record(i: int) -> dict:
    """The record `benches/ingest.rs` builds for index i."""
    user, tenant = i % 5_000, i % 200
    external_tenant = f"9f3a1c2e-5b7d-4e8f-a1b2-{tenant:012}"
    return {
        "CreationTime": "2026-11-20T09:12:03", "Id": f"0000{i:08}-0a4f-4e61-9b2d-7f8e9a0b1c2d",
        "Operation": "ChatCreated" if i % 3 == 0 else "MemberAdded", "OrganizationId": TENANT, "RecordType": 25,
        "UserKey": f"b7e6d5c4-3b2a-4190-8f7e-{tenant:012}", "UserType": 0, "Version": 1, "Workload": "MicrosoftTeams",
        "UserId": f"attacker{tenant}@evil{tenant}.example",
        "ChatThreadId": f"19:{i:08x}-7d9e-4c3b-8a6f-0e1d2c3b4a59_{user:08x}@unq.gbl.spaces", "CommunicationType": "OneOnOne",
        "ClientIP": "192.0.2.1",
        "ExtraProperties": [{"Key": "TimeZone", "Value": "Europe/Paris"}, {"Key": "ClientName", "Value": "skypeteams"}],
        "Members": [
            {"OrganizationId": external_tenant, "DisplayName": "IT Support", "UPN": f"attacker{tenant}@evil{tenant}.example"},
            {"OrganizationId": TENANT, "DisplayName": f"User {user}", "UPN": f"user{user}@contoso.com",
             "UserObjectId": f"00000000-0000-4000-8000-{user:012}"},
        ],
        "ParticipantInfo": {
            "HasForeignTenantUsers": True, "HasGuestUsers": False, "HasOtherGuestUsers": False, "HasUnauthenticatedUsers": False,
            "ParticipatingDomains": [f"evil{tenant}.example", "contoso.com"],
            "ParticipatingSIPDomains": [{"DomainName": f"evil{tenant}.example", "TenantId": external_tenant},
                                        {"DomainName": "contoso.com", "TenantId": TENANT}],
            "ParticipatingTenantIds": [TENANT, external_tenant],
        },
    }


def key_hash(key: str) -> int:
    """First 8 bytes of the key's SHA-256 as a signed big-endian integer (store::audit::key_hash)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def lookup_keys(r: dict) -> set:
    """The seven keys chatwarden indexes for such a record: chat, the internal member's object id
    and UPN, the actor's UserKey and UserId, the external tenant and its domain."""
    internal = r["Members"][1]
    external = r["Members"][0]
    return {
        "c:" + r["ChatThreadId"],
        "u:" + internal["UserObjectId"].lower(), "u:" + internal["UPN"].lower(),
        "u:" + r["UserKey"].lower(), "u:" + r["UserId"].lower(),
        "p:" + external["OrganizationId"].lower(), "p:" + external["UPN"].split("@")[1].lower(),
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 5_000
    page_size = int(sys.argv[3]) if len(sys.argv) > 3 else 32_768
    migration = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "migrations", "sqlite", "0005_audit_lookup.sql")
    with open(migration) as f:
        schema = f.read()
    schema = schema[schema.index("CREATE TABLE audit_records_v5"):schema.index("INSERT INTO audit_records_v5")]
    schema = schema.replace("audit_records_v5", "audit_records")
    migration = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "migrations", "sqlite", "0006_audit_lookup_buckets.sql")
    with open(migration) as f:
        buckets = f.read()
    schema += buckets[buckets.index("CREATE TABLE audit_lookup_v6"):buckets.index("INSERT INTO audit_lookup_v6")].replace("audit_lookup_v6", "audit_lookup")

    with tempfile.TemporaryDirectory(prefix="chatwarden-ceiling-") as work:
        db = sqlite3.connect(os.path.join(work, "audit.db"), isolation_level=None)
        for pragma in (f"page_size = {page_size}", "journal_mode = WAL", "synchronous = FULL", "busy_timeout = 10000", "foreign_keys = ON",
                       "temp_store = MEMORY", "cache_size = -16384"):
            db.execute(f"PRAGMA {pragma}")
        db.executescript(schema)
        db.execute("CREATE TEMP TABLE rec (batch INTEGER, seq INTEGER, id TEXT, tenant_id TEXT, operation TEXT, created_at BIGINT, "
                   "chat_thread_id TEXT, raw TEXT, ingested_at BIGINT)")
        db.execute("CREATE TEMP TABLE keys (batch INTEGER, bucket BIGINT, key_hash BIGINT, record_seq BIGINT)")
        db.execute("BEGIN")
        sizes = 0
        for i in range(count):
            r = record(i)
            raw = json.dumps(r, separators=(",", ":"))
            sizes += len(raw)
            seq = i + 1
            db.execute("INSERT INTO temp.rec VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (i // batch, seq, r["Id"], TENANT, r["Operation"], 1_763_629_923_000, r["ChatThreadId"], raw, 0))
            db.executemany("INSERT INTO temp.keys VALUES (?, ?, ?, ?)", [(i // batch, seq >> 16, key_hash(k), seq) for k in lookup_keys(r)])
        db.execute("CREATE INDEX temp.rec_batch ON rec (batch, seq)")
        db.execute("CREATE INDEX temp.keys_batch ON keys (batch, bucket, key_hash, record_seq)")
        db.execute("COMMIT")
        key_rows = db.execute("SELECT COUNT(*) FROM temp.keys").fetchone()[0]

        phases = [0.0, 0.0, 0.0]  # records, lookup keys, commit
        for b in range((count + batch - 1) // batch):
            db.execute("BEGIN")
            t0 = time.perf_counter()
            db.execute("INSERT OR IGNORE INTO audit_records (seq, id, tenant_id, operation, created_at, chat_thread_id, raw, ingested_at) "
                       "SELECT seq, id, tenant_id, operation, created_at, chat_thread_id, raw, ingested_at FROM temp.rec "
                       "WHERE batch = ? ORDER BY seq", (b,))
            t1 = time.perf_counter()
            db.execute("INSERT OR IGNORE INTO audit_lookup (bucket, key_hash, record_seq) SELECT bucket, key_hash, record_seq FROM temp.keys "
                       "WHERE batch = ? ORDER BY bucket, key_hash, record_seq", (b,))
            t2 = time.perf_counter()
            db.execute("COMMIT")
            t3 = time.perf_counter()
            phases[0] += t1 - t0
            phases[1] += t2 - t1
            phases[2] += t3 - t2
        elapsed = sum(phases)
        stored = db.execute("SELECT COUNT(*) FROM audit_records").fetchone()[0]
        indexed = db.execute("SELECT COUNT(*) FROM audit_lookup").fetchone()[0]
        assert stored == count and indexed == key_rows, (stored, indexed, key_rows)
        assert db.execute("PRAGMA page_size").fetchone()[0] == page_size
        print(f"SQLite {sqlite3.sqlite_version}, {page_size // 1024} KiB pages: {count:,} records ({sizes / count:.0f} bytes of JSON each, "
              f"{key_rows / count:.1f} lookup keys each), {batch:,} per transaction: "
              f"{elapsed:.2f} s, {count / elapsed:,.0f} records/s (records {phases[0]:.2f} s, lookup keys {phases[1]:.2f} s, "
              f"commits {phases[2]:.2f} s)")


if __name__ == "__main__":
    main()
