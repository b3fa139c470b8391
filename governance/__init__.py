"""Governance: identity, site policy (pre-gate), airlock (post-gate), audit log."""
