"""Hardware and input drivers, each behind a small port, chosen by name and imported lazily."""
