"""External model providers behind the platform's OpenAI-compatible surface (the gateway)."""
