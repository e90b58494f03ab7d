"""A small Django app (login, counter, logout) for the tests and benchmarks."""
