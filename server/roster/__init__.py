"""A venue's roster of people and the passes printed for them, and their pages."""
