"""The wire: event types and their JSON schema, the ZeroMQ publisher, subscriber and proxy,
CURVE keys, and an in-memory publisher. Torch-free."""
