"""Upstream of the dispatcher: the servers and how a request reaches one.

``transport`` holds retries, the per-call deadline and HTTP statuses; ``replicas`` holds admission per
server, routing, health and probes; ``affinity`` the prefix table; ``sse`` turns stream lines into events.
"""
