"""Database access: engine construction, the declarative base, schema migrations."""
