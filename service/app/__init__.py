"""Command handling: load state, decide, append, answer. Depends on the
domain and on the store's unit of work; knows nothing of gRPC."""
