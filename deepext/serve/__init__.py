"""REST API and model serving on Ray Serve (issues 6 and 7)."""
