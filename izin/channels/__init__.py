"""Outbound channels (SMS, e-mail): encoding, sizing and provider adapters."""
