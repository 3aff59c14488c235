"""Forms of the marketplace's pages, one module per concern (as ``views``):
``inventory``, ``listings`` and ``bookings``; ``fields`` holds the UTC,
minute-resolution time field they share. Forms validate input; services write.
"""
