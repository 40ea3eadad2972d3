"""Bags to episode datasets: preprocessing, conversion, loading and inspection."""
