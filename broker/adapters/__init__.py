"""Protocol adapters: other clients' wire formats over the same conversations."""
