"""An example service: bank charges behind per-bank circuit breakers driven by breaker-router."""
