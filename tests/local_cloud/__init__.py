"""The local cloud: deployment from template.yaml, Lambda runtime, logs, trigger, API, state."""
