"""The SMPP 3.4 server for customers: binds with per-account credentials, submit_sm through the
messaging service (what an HTTP send does), receipts and MO back as deliver_sm from a durable
outbox. See docs/smpp.md, "Customers over SMPP"."""
