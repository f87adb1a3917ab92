"""lightray.client."""
