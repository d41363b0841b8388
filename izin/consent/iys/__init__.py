"""İYS sync: push consents taken outside İYS, pull citizens' changes, reconcile, gate on acceptance.

    client.py        the typed HTTP client (tokens, consents, batches, pull, daily file)
    sync.py          push / pull / reconcile / status against the ledger
    holidays_tr.py   business days for the 3-business-day upload limit
    models.py        iys_sync, iys_cursors, iys_token
    cli.py           `izin iys push | pull | status | reconcile`
"""
