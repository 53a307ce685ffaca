"""What a request asks the broker to do (post, cancel, list, delete), shared by every protocol's routes."""
