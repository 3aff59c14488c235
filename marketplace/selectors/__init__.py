"""Marketplace reads. Import the functions from their modules."""
