"""pinlife: the system of record for My Number Card PINs."""
