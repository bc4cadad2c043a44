"""billing-dagster: meters cloud.gov usage, prices it, keeps a double-entry ledger."""
