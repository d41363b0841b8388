"""izin: a consent-first outbound campaign engine (law 6563, İYS)."""

__version__ = "0.1.0"
