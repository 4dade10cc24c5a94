"""Test equipment shared by the whole suite (not part of the product)."""
