"""Self check-in: a person declares coming in or going out from the venue's poster."""
