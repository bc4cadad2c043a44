"""The ledger: monthly usage posting, agreements' credits, balances and statements."""
