"""Pricing: measurements priced at the price valid at the start of their hour."""
