"""Pure domain logic: profiles, identities, pools, state machines, placement. No I/O."""
