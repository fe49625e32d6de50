"""The queue's model: tasks, their lifecycle, steps, backoff and schedules (no I/O)."""
