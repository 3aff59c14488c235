"""Financing writes. Import the functions from their modules."""
