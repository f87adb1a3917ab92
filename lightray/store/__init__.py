"""The object store: shared-memory segments owned by the node agent."""
