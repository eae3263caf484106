"""train.py, inference.py, the debugger rules and the metric lines (training/)."""
