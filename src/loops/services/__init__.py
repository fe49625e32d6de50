"""Services: the operations the edges (CLI, gateway, worker) call."""
