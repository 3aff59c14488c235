"""Marketplace writes. Import the functions from their modules."""
