"""Every table, imported in one place so metadata is complete for migrations and tests."""

from izin.campaigns.models import Campaign, Delivery, Lock
from izin.consent.models import (Contact, ContactAddress, ContactEvent, ContactTag, ConsentEvent,
                                 ConsentState, InboundMessage, LedgerHead, OptinRequest, PurgeRun,
                                 UndeliverableAddress)
from izin.consent.iys.models import IysCursor, IysSync, IysToken
from izin.db import Base

__all__ = ["Base", "Campaign", "Delivery", "Lock", "Contact", "ContactAddress", "ContactEvent", "ContactTag", "ConsentEvent",
           "ConsentState", "InboundMessage", "LedgerHead", "OptinRequest", "PurgeRun", "UndeliverableAddress",
           "IysCursor", "IysSync", "IysToken"]
