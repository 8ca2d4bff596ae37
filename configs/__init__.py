"""Bundled TOML configs (installed as package data: charrnn.configs)."""
