"""gRPC adapters: servicers translate requests to commands and answers to
responses; errors map to canonical codes in errors.py."""
