"""The administrative areas (provinces, wards) and the health officers who work in them."""
