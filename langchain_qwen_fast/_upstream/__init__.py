"""Upstream of the dispatcher: the servers and how a request reaches one.

``transport`` sends a call's attempts (the per-call deadline, HTTP statuses, SSE streams); ``retry`` decides
where and when a failed call tries again; ``replicas`` holds admission per server, routing, health and when to
probe; ``probe`` the probe's HTTP; ``affinity`` the prefix table; ``sse`` turns stream lines into events.
"""
