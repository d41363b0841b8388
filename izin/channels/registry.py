"""From a configured URL to an adapter: built-ins by scheme, others through entry points.

Built-ins are listed in `BUILTIN` below. A package adds an adapter by subclassing
`izin.channels.base.ChannelAdapter` and declaring, in its pyproject.toml::

    [project.entry-points."izin.channels"]
    verimor = "izin_verimor:VerimorAdapter"

The entry point's name is the URL scheme. A built-in scheme cannot be taken over by a plug-in.
Every failure is a ChannelConfigError naming the configuration key (``channels.sms.url``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from izin.channels.base import ChannelAdapter, redact_url
from izin.channels.errors import ChannelConfigError
from izin.channels.netgsm import NetgsmAdapter
from izin.channels.outbox import OutboxAdapter
from izin.channels.smtp import SmtpAdapter, SmtpsAdapter
from izin.channels.webhook import WebhookAdapter, WebhooksAdapter

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "adapter_class", "adapter_for", "known_schemes", "open_channels"]

ENTRY_POINT_GROUP = "izin.channels"

#: scheme → adapter class, for every adapter izin ships
BUILTIN: dict[str, type[ChannelAdapter]] = {
    "outbox": OutboxAdapter,
    "smtp": SmtpAdapter,
    "smtps": SmtpsAdapter,
    "netgsm": NetgsmAdapter,
    "webhook": WebhookAdapter,
    "webhooks": WebhooksAdapter,
}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)
            if ep.name.lower() not in BUILTIN}


def known_schemes() -> list[str]:
    """Every scheme a URL may use here: the built-ins, then installed plug-ins, sorted."""
    return sorted(BUILTIN) + sorted(_plugins())


def adapter_class(scheme: str, *, field: str | None = None) -> type[ChannelAdapter]:
    """The adapter class for ``scheme``; ChannelConfigError when nothing serves it."""
    scheme = scheme.lower()
    if scheme in BUILTIN:
        return BUILTIN[scheme]
    plugin = _plugins().get(scheme)
    if plugin is None:
        raise ChannelConfigError(f"unknown channel scheme {scheme!r}; known schemes: "
                                 f"{', '.join(known_schemes())}", field=field)
    try:
        loaded = plugin.load()
    except Exception as exc:  # a broken plug-in must not take the error handling down with it
        raise ChannelConfigError(f"the {scheme!r} adapter ({plugin.value}) cannot be loaded: {exc}",
                                 field=field, adapter=scheme) from None
    if not (isinstance(loaded, type) and issubclass(loaded, ChannelAdapter)):
        raise ChannelConfigError(f"the {scheme!r} entry point ({plugin.value}) is not a ChannelAdapter "
                                 "subclass", field=field, adapter=scheme)
    return loaded


def adapter_for(url: str, field: str) -> ChannelAdapter:
    """Build the adapter ``url`` names; ``field`` is the configuration key it came from."""
    url = url.strip()
    if not url:
        raise ChannelConfigError("is empty; set an adapter URL such as outbox://outbox", field=field)
    match = _SCHEME.match(url)
    if match is None:
        raise ChannelConfigError(f"{redact_url(url)!r} is not an adapter URL; write SCHEME://..., with "
                                 f"one of: {', '.join(known_schemes())}", field=field)
    cls = adapter_class(match.group(1), field=field)
    try:
        return cls.from_url(url)
    except ChannelConfigError as exc:
        raise ChannelConfigError(exc.message, field=field, adapter=exc.adapter or cls.scheme) from None
    except ValueError as exc:  # a plug-in that validates with plain ValueErrors
        raise ChannelConfigError(f"{redact_url(url)}: {exc}", field=field, adapter=cls.scheme) from None


def open_channels(channels: Mapping[str, Any]) -> dict[str, ChannelAdapter]:
    """Adapters for ``Settings.channels`` (or ``{"email": url, "sms": url}``), each checked to carry
    its channel; channels configured with the same URL share one adapter (one outbox)."""
    adapters: dict[str, ChannelAdapter] = {}
    by_url: dict[str, ChannelAdapter] = {}
    for channel, section in channels.items():
        url: str = section if isinstance(section, str) else section.url
        field = f"channels.{channel}.url"
        adapter = by_url.get(url.strip()) or adapter_for(url, field)
        if not adapter.accepts(channel):
            suitable = [s for s, c in BUILTIN.items() if c.channel in ("any", channel)]
            raise ChannelConfigError(f"{adapter.scheme}:// sends {adapter.channel}, not {channel}; "
                                     f"use one of {', '.join(f'{s}://' for s in suitable)}",
                                     field=field, adapter=adapter.scheme)
        by_url[url.strip()] = adapter
        adapters[channel] = adapter
    return adapters
