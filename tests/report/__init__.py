"""Reports, the console and `mlops wait` progress (a package, so fixtures can be package-scoped)."""
