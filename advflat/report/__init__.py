"""Collect finished runs into one table and draw the paper's correlation plots."""
