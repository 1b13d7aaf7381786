"""Sites: paired peer appliances (pairing, the DR token, the pinned certificate) and the
replication of this site's records to them. DR plans and activation build on these."""
