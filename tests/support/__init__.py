"""The tests' shared toolkit: helpers that several test modules use, so that no test module imports another."""
