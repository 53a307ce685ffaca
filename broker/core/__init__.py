"""What the front tier and the workers share: wire shapes, settings, Redis keys and scripts."""
