"""What reacts to registry events: the webhook plan (pure) and the receiver (HTTP server)."""
