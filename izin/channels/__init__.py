"""Outbound channels (SMS, e-mail): encoding, sizing and provider adapters.

    base.py          OutgoingMessage, Receipt, the ChannelAdapter base class
    errors.py        ChannelError and its tree (configuration, transient, permanent, account)
    registry.py      URL → adapter: built-ins and the ``izin.channels`` entry-point group
    mime.py          the email every adapter writes (RFC 5322, RFC 8058 headers)
    outbox.py        outbox://DIR       files instead of sending (the default)
    smtp.py          smtp://, smtps://  email over SMTP
    netgsm.py        netgsm://          SMS through Netgsm REST v2
    webhook.py       webhook(s)://      SMS as one JSON POST to any provider
    stub.py          in memory, for tests of the code that calls adapters
    sms_encoding.py  GSM-7 / Turkish / UCS-2 encoding and part counting

Importing this package imports none of them: the CLI pays for an adapter only when it sends.
"""
