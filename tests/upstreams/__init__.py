"""Fake model upstreams for the provider tests: a loopback HTTP server and recorded streams."""
