"""Optional integrations (Ray Data, Redis Streams workers, Prometheus). Each imports its extra inside."""
