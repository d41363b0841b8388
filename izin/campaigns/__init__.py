"""Campaigns: the YAML campaign spec, audiences, triggers, planning, deliveries and scheduling."""
