"""A task suite per module: its data as a Job for the runner, and its metrics."""
