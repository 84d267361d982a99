"""Identity and access: argon2id passwords, session and API tokens, Casbin RBAC, login rate limits."""
