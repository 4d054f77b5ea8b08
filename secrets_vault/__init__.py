"""The secrets vault: envelope encryption, KMS backends, leases, rotation, audit."""
