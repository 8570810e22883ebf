"""breaker-router: Datadog monitor notifications to services' circuit-breaker callbacks."""

__version__ = "0.1.0"
