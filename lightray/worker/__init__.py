"""lightray.worker."""
