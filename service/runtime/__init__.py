"""What a running process needs besides its rules and store: the service clock, logs, ids, the start-up heap
freeze and Prometheus metrics."""
