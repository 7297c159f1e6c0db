"""Channel adapters (one module per messaging platform)."""
