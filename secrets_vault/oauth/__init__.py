"""OAuth on the vault's side: the providers' token endpoints, the client secrets, the scope policy.

Runs in worker-vault (the only process configured with the client secrets); web imports only
`base` (purposes, PKCE/nonce helpers) and `scopes` (the table it shows and asks for). The mailbox
a grant belongs to is reached through `holder`, which the mail app registers: this package never
imports `mail`.
"""
