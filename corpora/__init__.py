"""Bundled corpora (installed as package data: charrnn.corpora)."""
