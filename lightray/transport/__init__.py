"""The message layer between lightray processes (ZeroMQ)."""
