"""lightray.agent.cluster."""
