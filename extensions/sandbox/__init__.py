"""The local sandbox: real services on 127.0.0.1 for tests, drills and `make demo`."""
