"""Contacts, their addresses, the append-only consent ledger, the send gate, audit and retention."""
