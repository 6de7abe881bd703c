"""The event store, the lock-state projection and the PIN verifiers
(SQLAlchemy 2 Core; SQLite and PostgreSQL). The only package that speaks SQL."""
