"""Venues and who may do what there: the venue directory and invitations (venues.py),
roles and permissions, the poster, and the pages for venues and sharing."""
