"""Reading Cloud Foundry: the v3 API client with UAA client-credentials auth."""
