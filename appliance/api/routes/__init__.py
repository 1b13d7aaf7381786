"""Route modules, one per resource; each has ``setup(app)``."""
