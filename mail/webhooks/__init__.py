"""Web zone: the Gmail push and Microsoft Graph notification routes (verify, ledger, queue by id)."""
