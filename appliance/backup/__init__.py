"""Backup and restore of a whole appliance: the store, the secrets key, the audit head,
certificates and configuration in one passphrase-encrypted archive (``anvil backup``)."""
