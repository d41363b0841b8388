from izin.db import table_names


def test_migrated_schema_has_every_table(db):
    assert table_names(db) == ["alembic_version", "campaigns", "consent_events", "consent_state", "contact_addresses",
                               "contact_tags", "contacts", "deliveries", "events", "inbound_messages", "iys_cursors", "iys_sync",
                               "iys_token", "ledger_head", "locks",
                               "optin_requests", "purge_runs", "undeliverable_addresses"]
