"""Saved conversations: lists with keyset pagination, detail, and the JSON API."""
