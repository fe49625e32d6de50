"""The worker: leases tasks (through the gateway or in-process) and runs agents on them.

One concept per module: ``client`` (the queue client protocol and the values it
returns), ``local`` and ``http`` (its two implementations), ``wire`` (the REST JSON
forms), ``agent`` (the engine wrapper that gives a task's agent its environment,
session and rate-limit waits), ``timeline`` (run events batched into the store, the
transcript, live logs), ``prompts`` (what each turn is told), ``runner`` (a task run
as a converge loop of the loop library), ``options`` and ``worker`` (the lease,
heartbeat and shutdown loop).
"""
