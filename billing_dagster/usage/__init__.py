"""Usage: landing Cloud Foundry state in Postgres and deriving hourly measurements from it."""
