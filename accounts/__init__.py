"""Users, sign-up and login, JWTs for the API, account settings."""
