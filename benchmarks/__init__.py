"""Latency and AP-parity benchmarks; each module has run(...) -> rows and a __main__."""
