"""Check-ins read back: the scan history with its masking and search, contact tracing,
the public feed, and their pages."""
