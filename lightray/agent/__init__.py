"""lightray.agent."""
