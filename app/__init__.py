"""saescope explorer: a read-only web app over one DuckDB index (never imports torch)."""
