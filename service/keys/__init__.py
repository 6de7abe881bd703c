"""Keys kept outside the database: the key ring (verifiers, integrity MACs, checkpoint signing; ring.py),
C2SP signed notes (notes.py), and the file modes a private key file must have (file_modes.py)."""
