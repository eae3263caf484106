"""The Lambda handlers and the shared layer, each handler in moto with its template environment."""
