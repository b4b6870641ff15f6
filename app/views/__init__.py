"""View builders: each turns request parameters into one response model (used by HTML and JSON)."""
