"""Admin for financing models (registered as the models arrive)."""
