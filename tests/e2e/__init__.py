"""End-to-end tests: real broker processes, Redis and Redis Cluster, Chromium, the Node suites."""
