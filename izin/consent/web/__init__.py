"""`izin serve`: the pages and webhooks through which people opt in and out, and providers report."""
