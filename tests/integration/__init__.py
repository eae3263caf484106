"""State machine path tests and template checks (a package, so module names stay unique)."""
